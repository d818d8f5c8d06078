"""The one way monitoring reads PostgreSQL: short timeouts, rows as dicts, no writes."""

from contextlib import contextmanager

from django.conf import settings
from django.db import DatabaseError, connection, transaction


@contextmanager
def catalog_cursor():
    """A cursor in a (sub)transaction with `SET LOCAL statement_timeout` = MONITORING_STATEMENT_TIMEOUT
    and `SET LOCAL lock_timeout` = MONITORING_LOCK_TIMEOUT.

    A size function queued behind an ALTER TABLE would otherwise wait as long as the DDL does:
    the lock timeout turns that into an error the caller falls back from (per object or per
    panel). The previous values are put back on the way out, so a caller's own transaction keeps
    its own.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('statement_timeout'), current_setting('lock_timeout')")
        previous_statement, previous_lock = cursor.fetchone()
        cursor.execute(
            "SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true)",
            [settings.MONITORING_STATEMENT_TIMEOUT, settings.MONITORING_LOCK_TIMEOUT],
        )
        try:
            yield cursor
        finally:
            if connection.is_usable() and not connection.needs_rollback:
                cursor.execute(
                    "SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true)",
                    [previous_statement, previous_lock],
                )


def fetch_all(cursor, sql: str, params=None) -> list[dict]:
    cursor.execute(sql, params or [])
    columns = [column.name for column in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def query(sql: str, params=None) -> list[dict]:
    with catalog_cursor() as cursor:
        return fetch_all(cursor, sql, params)


def extension_installed(cursor, name: str) -> bool:
    cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = %s)", [name])
    return cursor.fetchone()[0]


def ratio(part, whole) -> float | None:
    if part is None or not whole:
        return None
    return float(part) / float(whole)


def locked_relations(cursor) -> dict[int, str]:
    """{oid: why} of the relations a size function would wait on right now.

    Size functions take an ACCESS SHARE lock, which only ACCESS EXCLUSIVE conflicts with: held,
    or merely queued (a waiting ALTER TABLE makes every later lock request queue behind it).
    Reading pg_locks takes no relation lock. Selectors skip those relations' sizes and say why;
    the lock timeout covers a lock taken between this read and theirs.
    """
    rows = fetch_all(
        cursor,
        """
        SELECT l.relation::bigint AS oid, l.pid, l.granted,
               CASE WHEN l.granted THEN '{}'::int[] ELSE pg_blocking_pids(l.pid) END AS behind
        FROM pg_locks l
        WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' AND l.pid <> pg_backend_pid()
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        ORDER BY l.granted DESC, l.pid
        """,
    )
    locked: dict[int, str] = {}
    for row in rows:
        if row["oid"] in locked:
            continue
        why = f"locked by pid {row['pid']}"
        if not row["granted"] and row["behind"]:
            why += f" (queued behind pid {', '.join(str(pid) for pid in row['behind'])})"
        locked[row["oid"]] = why
    return locked


def unavailable(exc: Exception) -> str:
    """What a panel says when its read failed: the first line of the server's message."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return message[:300]


@contextmanager
def request_lock_timeout():
    """MONITORING_LOCK_TIMEOUT for the whole of a cockpit request, the ORM's reads of the apps'
    tables included (catalog_cursor sets it per read; this covers the rest). Put back after: the
    connection is pooled.

    Not behind PgBouncer in transaction mode: the SET and its reset would land on different
    server connections and leave the timeout behind for other clients (tests/pgbouncer); there
    each catalog read keeps its own SET LOCAL and the rest runs under the role's settings."""
    if settings.DB_BEHIND_PGBOUNCER:
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('lock_timeout'), set_config('lock_timeout', %s, false)",
            [settings.MONITORING_LOCK_TIMEOUT],
        )
        previous = cursor.fetchone()[0]
    try:
        yield
    finally:
        if connection.connection is not None and not connection.needs_rollback:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT set_config('lock_timeout', %s, false)", [previous])
            except DatabaseError:  # the connection broke: it is discarded, and its setting with it
                pass
