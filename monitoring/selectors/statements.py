"""pg_stat_statements: the heaviest statements, lifetime and over a window, grouped by the code
that issued them (the `/* opsdeck:view=... */` or `/* opsdeck:job=... */` comment)."""

from datetime import datetime, timedelta

from django.conf import settings

from monitoring.models import StatementSnapshot
from monitoring.selectors.base import catalog_cursor, extension_installed, fetch_all, ratio

ORDERS = {"total": "total_exec_ms", "mean": "mean_exec_ms", "calls": "calls"}
WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}

ENABLE_HELP = (
    "pg_stat_statements is not available. Add it to shared_preload_libraries in postgresql.conf "
    "(shared_preload_libraries = 'pg_stat_statements'), restart PostgreSQL, then run "
    "CREATE EXTENSION pg_stat_statements; in the Opsdeck database. The embedded development "
    "server (make run) does both."
)

# One row per statement (queryid) of this database. pg_stat_statements keeps a row per user and
# per nesting level (with track = all, an EXPLAIN the cockpit runs is recorded again, nested,
# under the explained statement's queryid): the counters are the top-level rows' sums (nested rows
# only for a statement that never ran at top level, so nothing is counted twice), and the text is
# the busiest top-level row's, chosen deterministically.
STATEMENTS_SQL_TEMPLATE = """
WITH s AS (
    SELECT s.*, bool_or(s.toplevel) OVER (PARTITION BY s.queryid) AS has_toplevel
    FROM pg_stat_statements s
    WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND s.queryid IS NOT NULL
      {where}
)
SELECT s.queryid, min(s.userid)::bigint AS userid, s.dbid::bigint AS dbid,
       (array_agg(s.query ORDER BY s.toplevel DESC, s.calls DESC, s.userid))[1] AS query,
       sum(s.calls)::bigint AS calls, sum(s.rows)::bigint AS rows,
       sum(s.total_exec_time)::float AS total_exec_ms,
       (sum(s.total_exec_time) / nullif(sum(s.calls), 0))::float AS mean_exec_ms,
       sum(s.shared_blks_hit)::bigint AS shared_blks_hit, sum(s.shared_blks_read)::bigint AS shared_blks_read
FROM s
WHERE s.toplevel OR NOT s.has_toplevel
GROUP BY s.queryid, s.dbid
"""
STATEMENTS_SQL = STATEMENTS_SQL_TEMPLATE.format(where="")


def statements_available(cursor) -> bool:
    if not extension_installed(cursor, "pg_stat_statements"):
        return False
    # The extension's settings exist only when its library is preloaded; without it every read fails.
    cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_settings WHERE name = 'pg_stat_statements.max')")
    return cursor.fetchone()[0]


def _decorate(row: dict) -> dict:
    from project.db.attribution import origin_of, strip_origin

    row["origin"] = origin_of(row["query"]) or "unattributed"
    row["query"] = strip_origin(row["query"])  # the origin has its own column
    blocks = (row["shared_blks_hit"] or 0) + (row["shared_blks_read"] or 0)
    row["cache_hit_ratio"] = ratio(row["shared_blks_hit"], blocks)
    row["rows_per_call"] = row["rows"] / row["calls"] if row["calls"] else None
    row["slow"] = (
        row["mean_exec_ms"] is not None
        and row["mean_exec_ms"] >= settings.MONITORING_SLOW_QUERY_MEAN_MS
        and row["calls"] >= settings.MONITORING_SLOW_QUERY_MIN_CALLS
    )
    return row


def current_statements(cursor) -> list[dict]:
    return fetch_all(cursor, STATEMENTS_SQL)


def baseline_as_of(rows: list[dict], moment: datetime) -> dict[tuple, dict]:
    """Each statement's counters as of `moment`: its newest snapshot at or before it, found with
    one index probe per statement (stmtsnap_query_taken_idx), not a scan of the history."""
    if not rows:
        return {}
    table = StatementSnapshot._meta.db_table
    with catalog_cursor() as cursor:
        found = fetch_all(
            cursor,
            f"""
            SELECT k.queryid, k.userid, k.dbid, s.calls, s.total_exec_ms, s.rows, s.shared_blks_hit,
                   s.shared_blks_read
            FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS k(queryid, userid, dbid)
            CROSS JOIN LATERAL (
                SELECT * FROM {table} AS s
                WHERE s.queryid = k.queryid AND s.userid = k.userid AND s.dbid = k.dbid AND s.taken_at <= %s
                ORDER BY s.taken_at DESC LIMIT 1
            ) AS s
            """,
            [[r["queryid"] for r in rows], [r["userid"] for r in rows], [r["dbid"] for r in rows], moment],
        )
    return {(r["queryid"], r["userid"], r["dbid"]): r for r in found}


def window_deltas(rows: list[dict], since: datetime) -> list[dict]:
    """Counters gained since `since`: live counters minus the snapshot baseline (a statement with
    no baseline is new in the window; counters below their baseline mean stats were reset)."""
    baseline = baseline_as_of(rows, since)
    result = []
    for row in rows:
        base = baseline.get((row["queryid"], row["userid"], row["dbid"]))
        if base is not None and row["calls"] >= base["calls"]:
            calls = row["calls"] - base["calls"]
            total = row["total_exec_ms"] - base["total_exec_ms"]
            rows_delta = row["rows"] - base["rows"]
            hit = row["shared_blks_hit"] - base["shared_blks_hit"]
            read = row["shared_blks_read"] - base["shared_blks_read"]
        else:
            calls, total, rows_delta = row["calls"], row["total_exec_ms"], row["rows"]
            hit, read = row["shared_blks_hit"], row["shared_blks_read"]
        if calls <= 0:
            continue
        result.append(
            {
                **row,
                "calls": calls,
                "total_exec_ms": total,
                "mean_exec_ms": total / calls,
                "rows": rows_delta,
                "shared_blks_hit": hit,
                "shared_blks_read": read,
                "lifetime_mean_exec_ms": row["mean_exec_ms"],
                "new_in_window": base is None,
            }
        )
    return result


def slow_queries(*, order: str = "total", window: str | None = None, limit: int = 50, now=None) -> dict:
    """Top statements by total time, mean time or calls; over a window (from the 5-minute
    snapshots) or over their lifetime; and the time grouped by origin (view or job)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {sorted(ORDERS)}")
    if window is not None and window not in WINDOWS:
        raise ValueError(f"window must be one of {sorted(WINDOWS)}")
    with catalog_cursor() as cursor:
        if not statements_available(cursor):
            return {"available": False, "message": ENABLE_HELP, "statements": [], "by_origin": []}
        rows = current_statements(cursor)
        cursor.execute("SELECT now()")
        now = now or cursor.fetchone()[0]
        cursor.execute("SELECT stats_reset FROM pg_stat_statements_info")
        stats_reset = cursor.fetchone()[0]
    if window is not None:
        rows = window_deltas(rows, now - WINDOWS[window])
    rows = [_decorate(row) for row in rows]
    by_origin: dict[str, dict] = {}
    for row in rows:
        group = by_origin.setdefault(
            row["origin"], {"origin": row["origin"], "calls": 0, "total_exec_ms": 0.0, "statements": 0}
        )
        group["calls"] += row["calls"]
        group["total_exec_ms"] += row["total_exec_ms"]
        group["statements"] += 1
    total_ms = sum(group["total_exec_ms"] for group in by_origin.values()) or None
    for group in by_origin.values():
        group["share"] = ratio(group["total_exec_ms"], total_ms)
    key = ORDERS[order]
    rows.sort(key=lambda row: row[key] or 0, reverse=True)
    return {
        "available": True,
        "order": order,
        "window": window,
        "stats_reset": stats_reset,
        "statements": rows[:limit],
        "by_origin": sorted(by_origin.values(), key=lambda group: group["total_exec_ms"], reverse=True),
        "slow_threshold": {
            "mean_ms": settings.MONITORING_SLOW_QUERY_MEAN_MS,
            "min_calls": settings.MONITORING_SLOW_QUERY_MIN_CALLS,
        },
    }


def statement(queryid: int) -> dict | None:
    """One statement of this database by queryid, as pg_stat_statements has it."""
    with catalog_cursor() as cursor:
        if not statements_available(cursor):
            return None
        rows = fetch_all(cursor, STATEMENTS_SQL_TEMPLATE.format(where="AND s.queryid = %s"), [queryid])
    return _decorate(rows[0]) if rows else None
