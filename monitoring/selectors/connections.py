"""Server-side connections: pg_stat_activity by application and state, the longest queries and
transactions, sessions waiting on a lock, and the headroom to max_connections."""

from django.conf import settings

from monitoring.selectors.base import catalog_cursor, fetch_all

ACTIVITY_COLUMNS = """
    a.pid, a.datname AS database, a.usename AS "user", a.application_name, a.client_addr::text AS client,
    a.state, a.wait_event_type, a.wait_event, a.backend_type,
    a.xact_start, a.query_start, a.state_change,
    extract(epoch FROM now() - a.query_start)::float AS query_s,
    extract(epoch FROM now() - a.xact_start)::float AS xact_s,
    left(a.query, 2000) AS query,
    cardinality(pg_blocking_pids(a.pid)) > 0 AS waiting_on_lock,
    pg_blocking_pids(a.pid) AS blocked_by
"""


def connections(*, limit: int = 20) -> dict:
    with catalog_cursor() as cursor:
        (server,) = fetch_all(
            cursor,
            """
            SELECT current_setting('max_connections')::int AS max_connections,
                   current_setting('superuser_reserved_connections')::int AS reserved,
                   (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS client_connections,
                   pg_backend_pid() AS own_pid
            """,
        )
        groups = fetch_all(
            cursor,
            """
            SELECT coalesce(nullif(application_name, ''), '(none)') AS application_name,
                   coalesce(state, backend_type) AS state,
                   count(*) AS connections,
                   count(*) FILTER (WHERE cardinality(pg_blocking_pids(pid)) > 0) AS waiting_on_lock,
                   GREATEST(max(extract(epoch FROM now() - state_change)), 0)::float AS longest_in_state_s
            FROM pg_stat_activity
            WHERE backend_type = 'client backend'
            GROUP BY 1, 2
            ORDER BY 1, 2
            """,
        )
        by_state = fetch_all(
            cursor,
            """
            SELECT coalesce(state, 'unknown') AS state, count(*) AS connections
            FROM pg_stat_activity WHERE backend_type = 'client backend' GROUP BY 1 ORDER BY 1
            """,
        )
        longest_queries = fetch_all(
            cursor,
            f"""
            SELECT {ACTIVITY_COLUMNS} FROM pg_stat_activity a
            WHERE a.state = 'active' AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'
            ORDER BY a.query_start LIMIT %s
            """,
            [limit],
        )
        longest_transactions = fetch_all(
            cursor,
            f"""
            SELECT {ACTIVITY_COLUMNS} FROM pg_stat_activity a
            WHERE a.xact_start IS NOT NULL AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'
            ORDER BY a.xact_start LIMIT %s
            """,
            [limit],
        )
        waiting = fetch_all(
            cursor,
            f"""
            SELECT {ACTIVITY_COLUMNS} FROM pg_stat_activity a
            WHERE cardinality(pg_blocking_pids(a.pid)) > 0 ORDER BY a.query_start LIMIT %s
            """,
            [limit],
        )
    usable = server["max_connections"] - server["reserved"]
    long_query_s = settings.MONITORING_LONG_QUERY_S
    for row in longest_queries:
        row["long_running"] = (row["query_s"] or 0) >= long_query_s
    return {
        "max_connections": server["max_connections"],
        "superuser_reserved_connections": server["reserved"],
        "client_connections": server["client_connections"],
        "headroom": usable - server["client_connections"],
        "usage_ratio": server["client_connections"] / usable if usable > 0 else None,
        "by_state": by_state,
        "by_application": groups,
        "longest_queries": longest_queries,
        "longest_transactions": longest_transactions,
        "idle_in_transaction": [row for row in longest_transactions if row["state"] == "idle in transaction"],
        "waiting_on_lock": waiting,
        "long_query_threshold_s": long_query_s,
    }


def backend(pid: int) -> dict | None:
    """One backend by pid, as the catalog knows it (actions act only on what this returns)."""
    rows = fetch_all_activity("a.pid = %s", [pid])
    return rows[0] if rows else None


def fetch_all_activity(where: str, params: list) -> list[dict]:
    with catalog_cursor() as cursor:
        return fetch_all(cursor, f"SELECT {ACTIVITY_COLUMNS} FROM pg_stat_activity a WHERE {where}", params)


def maintenance_progress() -> list[dict]:
    """Long maintenance in flight (VACUUM, ANALYZE, CREATE INDEX / REINDEX), from pg_stat_progress_*."""
    with catalog_cursor() as cursor:
        return fetch_all(
            cursor,
            """
            SELECT 'vacuum' AS kind, p.pid, p.relid::regclass::text AS relation, p.phase,
                   round(100.0 * p.heap_blks_scanned / nullif(p.heap_blks_total, 0), 1)::float AS percent,
                   extract(epoch FROM now() - a.query_start)::float AS running_s
            FROM pg_stat_progress_vacuum p JOIN pg_stat_activity a USING (pid)
            UNION ALL
            SELECT 'analyze', p.pid, p.relid::regclass::text, p.phase,
                   round(100.0 * p.sample_blks_scanned / nullif(p.sample_blks_total, 0), 1)::float,
                   extract(epoch FROM now() - a.query_start)::float
            FROM pg_stat_progress_analyze p JOIN pg_stat_activity a USING (pid)
            UNION ALL
            SELECT lower(p.command), p.pid, coalesce(p.index_relid::regclass::text, p.relid::regclass::text), p.phase,
                   round(100.0 * coalesce(nullif(p.blocks_done, 0), p.tuples_done)
                         / nullif(coalesce(nullif(p.blocks_total, 0), p.tuples_total), 0), 1)::float,
                   extract(epoch FROM now() - a.query_start)::float
            FROM pg_stat_progress_create_index p JOIN pg_stat_activity a USING (pid)
            ORDER BY 6 DESC
            """,
        )


def lock_waits() -> dict:
    """Who waits on a lock and who blocks them, right now (pg_blocking_pids), for the Overview.

    `blocks` counts every session waiting on a blocker, directly or through another waiter: an
    idle-in-transaction session holding a table lock, an ALTER TABLE queued behind it and five
    reads queued behind the ALTER make "pid X blocks 6 sessions". Root blockers (blocking, not
    waiting themselves) come first: they are the ones to look at.
    """
    with catalog_cursor() as cursor:
        rows = fetch_all(
            cursor,
            """
            SELECT a.pid, a.usename AS "user", a.application_name, a.state, a.backend_type,
                   a.wait_event_type, a.wait_event, left(a.query, 500) AS query,
                   extract(epoch FROM now() - a.xact_start)::float AS xact_s,
                   extract(epoch FROM now() - a.state_change)::float AS state_s,
                   pg_blocking_pids(a.pid) AS blocked_by
            FROM pg_stat_activity a
            WHERE a.pid <> pg_backend_pid()
            """,
        )
    by_pid = {row["pid"]: row for row in rows}
    waiters_of: dict[int, set[int]] = {}
    for row in rows:
        for blocker in row["blocked_by"] or []:
            waiters_of.setdefault(blocker, set()).add(row["pid"])

    def all_waiters(pid: int) -> set[int]:
        seen: set[int] = set()
        todo = [pid]
        while todo:
            for waiter in waiters_of.get(todo.pop(), ()):
                if waiter not in seen and waiter != pid:
                    seen.add(waiter)
                    todo.append(waiter)
        return seen

    blockers = []
    for pid, direct in waiters_of.items():
        row = by_pid.get(pid, {"pid": pid, "state": None, "query": None, "application_name": None})
        blockers.append(
            {
                "pid": pid,
                "state": row.get("state"),
                "application_name": row.get("application_name"),
                "user": row.get("user"),
                "query": row.get("query"),
                "xact_s": row.get("xact_s"),
                "state_s": row.get("state_s"),
                "blocks_directly": len(direct),
                "blocks": len(all_waiters(pid)),
                "root": not by_pid.get(pid, {}).get("blocked_by"),
            }
        )
    blockers.sort(key=lambda blocker: (not blocker["root"], -blocker["blocks"], blocker["pid"]))
    waiting = [
        {
            "pid": row["pid"],
            "application_name": row["application_name"],
            "state": row["state"],
            "wait_event_type": row["wait_event_type"],
            "wait_event": row["wait_event"],
            "waiting_s": row["state_s"],
            "query": row["query"],
            "blocked_by": row["blocked_by"],
        }
        for row in rows
        if row["blocked_by"]
    ]
    waiting.sort(key=lambda row: -(row["waiting_s"] or 0))
    return {"blockers": blockers, "waiting": waiting}
