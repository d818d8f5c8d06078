"""How far the read replica is behind the primary: for the cockpit, /metrics and any guard that
must not pile more writes on a replica that is falling behind."""

from django.db import DatabaseError, connections

from project.db.routers import REPLICA_ALIAS, replica_usable

REPLICA_SQL = """
SELECT pg_is_in_recovery() AS in_recovery,
       pg_is_wal_replay_paused() AS replay_paused,
       pg_last_wal_replay_lsn()::text AS replay_lsn,
       -- Caught up (all received WAL replayed) means no lag, however long ago the last write was.
       CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float END AS lag_s
"""


def replication_lag() -> dict:
    """{configured, available, lag_s, lag_bytes, replay_paused, error}: lag_s is the age of the last
    replayed transaction while WAL waits to be replayed; lag_bytes the WAL the replica has still to
    replay (from the primary's current position)."""
    from django.conf import settings

    if REPLICA_ALIAS not in settings.DATABASES:
        return {"configured": False, "available": False}
    if not replica_usable():
        return {"configured": True, "available": False, "error": "replica unreachable: reads go to the primary"}
    try:
        with connections[REPLICA_ALIAS].cursor() as cursor:
            cursor.execute(REPLICA_SQL)
            in_recovery, paused, replay_lsn, lag_s = cursor.fetchone()
        if not in_recovery or replay_lsn is None:
            return {"configured": True, "available": True, "error": "DATABASE_REPLICA_URL is not a standby"}
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)::bigint", [replay_lsn])
            (lag_bytes,) = cursor.fetchone()
    except DatabaseError as exc:
        return {"configured": True, "available": False, "error": str(exc).splitlines()[0][:200]}
    return {
        "configured": True,
        "available": True,
        "lag_s": round(lag_s, 3),
        "lag_bytes": max(lag_bytes, 0),
        "replay_paused": paused,
    }
