"""Tables (sizes, rows, bloat, vacuum, scans, cache hit), partitions and cache hit ratios.

A partitioned table is one row here, its figures added up over its partitions, so the biggest
tables are seen as the application sees them.
"""

import re
from datetime import UTC, datetime

from dateutil.relativedelta import relativedelta
from django.conf import settings

from monitoring.selectors.base import catalog_cursor, extension_installed, fetch_all, locked_relations, ratio
from monitoring.selectors.tracing import model_for_table

USER_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'"

# The standard table bloat estimate (ioguix/pgsql-bloat-estimation, simplified to the heap):
# expected pages from reltuples, fillfactor and each column's average width in pg_stats
# (23-byte tuple header + null bitmap, max-aligned, + a 4-byte line pointer), against relpages.
TABLES_SQL = f"""
WITH leaf AS (
    SELECT c.oid, c.relname, n.nspname, c.relkind, c.reltuples, c.relpages, c.reltoastrelid,
           coalesce(pg_partition_root(c.oid), c.oid) AS root,
           -- size functions would queue behind an ACCESS EXCLUSIVE lock: skipped (base.locked_relations)
           (c.oid = ANY(%(locked)s::oid[]) OR c.reltoastrelid = ANY(%(locked)s::oid[])) AS locked,
           coalesce(substring(array_to_string(c.reloptions, ' ') FROM 'fillfactor=([0-9]+)')::int, 100) AS fillfactor
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'm') AND {USER_SCHEMAS}
),
width AS (
    SELECT leaf.oid,
           sum((1 - coalesce(s.null_frac, 0)) * coalesce(s.avg_width, 0)) AS data_width,
           max(coalesce(s.null_frac, 0)) AS max_null_frac,
           count(*) AS ncols
    FROM leaf
    JOIN pg_attribute a ON a.attrelid = leaf.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_stats s ON s.schemaname = leaf.nspname AND s.tablename = leaf.relname AND s.attname = a.attname
    GROUP BY leaf.oid
),
leaf_figures AS (
    -- idx_scan is NULL for a table without indexes: 0 scans, not an unknown that breaks the sums
    SELECT leaf.*, st.n_live_tup, st.n_dead_tup, st.seq_scan, st.seq_tup_read,
           coalesce(st.idx_scan, 0) AS idx_scan, coalesce(st.idx_tup_fetch, 0) AS idx_tup_fetch,
           st.last_vacuum, st.last_autovacuum, st.last_analyze, st.last_autoanalyze, st.n_mod_since_analyze,
           io.heap_blks_hit, io.heap_blks_read, io.idx_blks_hit, io.idx_blks_read,
           CASE WHEN NOT leaf.locked THEN pg_relation_size(leaf.oid) END AS table_bytes,
           CASE WHEN NOT leaf.locked THEN pg_indexes_size(leaf.oid) END AS index_bytes,
           CASE WHEN leaf.reltoastrelid = 0 THEN 0
                WHEN NOT leaf.locked THEN pg_total_relation_size(leaf.reltoastrelid) END AS toast_bytes,
           GREATEST(leaf.relpages - ceil(GREATEST(leaf.reltuples, 0) / GREATEST(floor(
               (current_setting('block_size')::int - 24) * leaf.fillfactor / 100.0
               / (4 + (23 + CASE WHEN width.max_null_frac > 0 THEN (width.ncols + 7) / 8 ELSE 0 END + 7) / 8 * 8
                    + (ceil(coalesce(width.data_width, 0))::int + 7) / 8 * 8)), 1)), 0)
               * current_setting('block_size')::bigint AS bloat_bytes
    FROM leaf
    LEFT JOIN width ON width.oid = leaf.oid
    LEFT JOIN pg_stat_all_tables st ON st.relid = leaf.oid
    LEFT JOIN pg_statio_all_tables io ON io.relid = leaf.oid
)
SELECT r.oid, rn.nspname AS schema, r.relname AS "table", r.relkind = 'p' AS partitioned, r.relkind = 'm' AS matview,
       count(*) FILTER (WHERE f.oid <> f.root) AS partitions,
       sum(GREATEST(f.reltuples, 0))::bigint AS rows_estimate,
       sum(f.n_live_tup)::bigint AS live_rows, sum(f.n_dead_tup)::bigint AS dead_rows,
       sum(f.table_bytes)::bigint AS table_bytes, sum(f.index_bytes)::bigint AS index_bytes,
       sum(f.toast_bytes)::bigint AS toast_bytes,
       sum(f.table_bytes + f.index_bytes + f.toast_bytes)::bigint AS total_bytes,
       sum(f.bloat_bytes)::bigint AS bloat_bytes,
       sum(f.seq_scan)::bigint AS seq_scan, sum(f.seq_tup_read)::bigint AS seq_tup_read,
       sum(f.idx_scan)::bigint AS idx_scan, sum(f.n_mod_since_analyze)::bigint AS modified_since_analyze,
       max(f.last_vacuum) AS last_vacuum, min(f.last_autovacuum) AS last_autovacuum,
       max(f.last_analyze) AS last_analyze, min(f.last_autoanalyze) AS last_autoanalyze,
       sum(f.heap_blks_hit)::bigint AS heap_blks_hit, sum(f.heap_blks_read)::bigint AS heap_blks_read,
       array_agg(f.oid::bigint) FILTER (WHERE f.locked) AS locked_oids
FROM leaf_figures f
JOIN pg_class r ON r.oid = f.root
JOIN pg_namespace rn ON rn.oid = r.relnamespace
GROUP BY r.oid, rn.nspname, r.relname, r.relkind
ORDER BY sum(f.table_bytes + f.index_bytes + f.toast_bytes) DESC NULLS LAST, rn.nspname, r.relname
"""


def tables() -> list[dict]:
    """Every table with its figures; a table whose size cannot be read without waiting for a lock
    has `size_unavailable` ("locked by pid X") and no sizes instead of holding the page up."""
    with catalog_cursor() as cursor:
        locked = locked_relations(cursor)
        rows = fetch_all(cursor, TABLES_SQL, {"locked": list(locked)})
    for row in rows:
        locked_oids = row.pop("locked_oids") or []
        row["size_unavailable"] = "; ".join(f"size unavailable: {locked[oid]}" for oid in locked_oids) or None
        row["name"] = f"{row['schema']}.{row['table']}"
        row["model"] = model_for_table(row["table"], schema=row["schema"])
        row["dead_ratio"] = ratio(row["dead_rows"], (row["live_rows"] or 0) + (row["dead_rows"] or 0))
        row["bloat_ratio"] = ratio(row["bloat_bytes"], row["table_bytes"])
        row["cache_hit_ratio"] = ratio(row["heap_blks_hit"], (row["heap_blks_hit"] or 0) + (row["heap_blks_read"] or 0))
        row["index_use_ratio"] = ratio(row["idx_scan"], (row["seq_scan"] or 0) + (row["idx_scan"] or 0))
    return rows


def table_bloat_exact(oid: int) -> dict:
    """pgstattuple_approx() of one table (each partition): reads the pages the visibility map
    does not mark all-visible, so it is asked for one table at a time."""
    with catalog_cursor() as cursor:
        if not extension_installed(cursor, "pgstattuple"):
            return {"available": False}
        parts = fetch_all(
            cursor,
            """
            SELECT t.relid::regclass::text AS "table", s.table_len, s.approx_tuple_count,
                   s.dead_tuple_len, s.approx_free_space, s.approx_free_percent, s.dead_tuple_percent
            FROM (SELECT p.relid FROM pg_partition_tree(%s::oid::regclass) AS p WHERE p.isleaf
                  UNION SELECT %s::oid::regclass) AS t
            JOIN pg_class c ON c.oid = t.relid AND c.relkind IN ('r', 'm')
            CROSS JOIN LATERAL pgstattuple_approx(t.relid) AS s
            """,
            [oid, oid],
        )
    table_len = sum(part["table_len"] for part in parts)
    wasted = sum(part["dead_tuple_len"] + part["approx_free_space"] for part in parts)
    return {"available": True, "parts": parts, "table_bytes": table_len, "bloat_ratio": ratio(wasted, table_len)}


def cache_hit() -> dict:
    """Share of block reads served from shared buffers, for tables and for indexes (PgHero: >= 99%)."""
    with catalog_cursor() as cursor:
        (row,) = fetch_all(
            cursor,
            """
            SELECT (SELECT sum(heap_blks_hit) FROM pg_statio_user_tables)::bigint AS table_hit,
                   (SELECT sum(heap_blks_read) FROM pg_statio_user_tables)::bigint AS table_read,
                   (SELECT sum(idx_blks_hit) FROM pg_statio_user_indexes)::bigint AS index_hit,
                   (SELECT sum(idx_blks_read) FROM pg_statio_user_indexes)::bigint AS index_read
            """,
        )
    table_hit, table_read = row["table_hit"] or 0, row["table_read"] or 0
    index_hit, index_read = row["index_hit"] or 0, row["index_read"] or 0
    return {
        "table": ratio(table_hit, table_hit + table_read),
        "index": ratio(index_hit, index_hit + index_read),
        "table_blocks": {"hit": table_hit, "read": table_read},
        "index_blocks": {"hit": index_hit, "read": index_read},
        "threshold": settings.MONITORING_CACHE_HIT_MIN,
    }


_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


def _parse_bound(expression: str) -> tuple[datetime, datetime] | None:
    match = _BOUND.search(expression or "")
    if not match:
        return None
    try:
        start, end = (datetime.fromisoformat(value) for value in match.groups())
    except ValueError:
        return None  # not a time range (integers, say): no months to count
    return tuple(moment if moment.tzinfo else moment.replace(tzinfo=UTC) for moment in (start, end))


def months_ahead(ranges: list[tuple[datetime, datetime]], now: datetime) -> int | None:
    """Whole months after the current one covered without a gap (0: this month or the next is missing)."""
    if not ranges:
        return None
    covered_until = None
    for start, end in sorted(ranges):
        if covered_until is None:
            if start <= now < end:
                covered_until = end
        elif start <= covered_until:
            covered_until = max(covered_until, end)
    if covered_until is None:
        return 0
    next_month = datetime(now.year, now.month, 1, tzinfo=UTC) + relativedelta(months=1)
    months = 0
    while next_month + relativedelta(months=months + 1) <= covered_until:
        months += 1
    return months


def partitions(now: datetime | None = None) -> list[dict]:
    """Every partitioned table with its partitions: bounds, rows (estimated), size, months ahead,
    and rows that fell into a DEFAULT partition (a sign that partitions ran out)."""
    from project.partitions import registered_partitioned_models

    now = now or datetime.now(UTC)
    managed = {model._meta.db_table for model in registered_partitioned_models()}
    with catalog_cursor() as cursor:
        locked = locked_relations(cursor)
        rows = fetch_all(
            cursor,
            f"""
            SELECT p.oid AS parent_oid, pn.nspname AS schema, p.relname AS parent, c.relname AS partition,
                   c.oid::bigint AS partition_oid,
                   -- pg_get_expr() and pg_get_partkeydef() open the relation: skipped while DDL holds
                   -- or awaits a lock on it (base.locked_relations)
                   CASE WHEN NOT (c.oid = ANY(%(locked)s::oid[]) OR p.oid = ANY(%(locked)s::oid[]))
                        THEN pg_get_expr(c.relpartbound, c.oid) ELSE '(bound unavailable: locked)' END AS bound,
                   c.oid = pt.partdefid AS is_default,
                   GREATEST(c.reltuples, 0)::bigint AS rows_estimate,
                   coalesce(st.n_live_tup, 0)::bigint AS live_rows,
                   CASE WHEN NOT c.oid = ANY(%(locked)s::oid[]) THEN pg_total_relation_size(c.oid) END AS size_bytes,
                   CASE WHEN NOT p.oid = ANY(%(locked)s::oid[]) THEN pg_get_partkeydef(p.oid)
                        ELSE '(partition key unavailable: locked)' END AS partition_key
            FROM pg_class p
            JOIN pg_namespace pn ON pn.oid = p.relnamespace
            JOIN pg_partitioned_table pt ON pt.partrelid = p.oid
            JOIN pg_inherits i ON i.inhparent = p.oid
            JOIN pg_class c ON c.oid = i.inhrelid
            LEFT JOIN pg_stat_all_tables st ON st.relid = c.oid
            WHERE p.relkind = 'p' AND {USER_SCHEMAS.replace("n.", "pn.")}
            ORDER BY pn.nspname, p.relname, c.relname
            """,
            {"locked": list(locked)},
        )
    tables_by_name: dict[str, dict] = {}
    for row in rows:
        table = tables_by_name.setdefault(
            (row["schema"], row["parent"]),
            {
                "oid": row["parent_oid"],
                "schema": row["schema"],
                "table": row["parent"],
                "name": f"{row['schema']}.{row['parent']}",
                "model": model_for_table(row["parent"], schema=row["schema"]),
                "partition_key": row["partition_key"],
                "managed": row["parent"] in managed and row["schema"] == "public",
                "size_unavailable": None,
                "partitions": [],
                "default_rows": 0,
                "rows_estimate": 0,
                "size_bytes": 0,
            },
        )
        bounds = None if row["is_default"] else _parse_bound(row["bound"])
        table["partitions"].append(
            {
                "name": row["partition"],
                "bound": row["bound"],
                "is_default": row["is_default"],
                "range_start": bounds[0] if bounds else None,
                "range_end": bounds[1] if bounds else None,
                # reltuples lags until ANALYZE; the statistics' live count is current.
                "rows_estimate": max(row["rows_estimate"], row["live_rows"]),
                "size_bytes": row["size_bytes"],
            }
        )
        table["rows_estimate"] += max(row["rows_estimate"], row["live_rows"])
        table["size_bytes"] += row["size_bytes"] or 0
        if row["partition_oid"] in locked:
            table["size_unavailable"] = f"size of {row['partition']} unavailable: {locked[row['partition_oid']]}"
        if row["is_default"]:
            table["default_rows"] += max(row["rows_estimate"], row["live_rows"])
    for table in tables_by_name.values():
        ranges = [(p["range_start"], p["range_end"]) for p in table["partitions"] if p["range_start"]]
        table["months_ahead"] = months_ahead(ranges, now)
        table["status"] = partition_status(table["months_ahead"], table["default_rows"])
    return list(tables_by_name.values())


def partition_status(months: int | None, default_rows: int) -> str:
    """Red at 0 months ahead or rows in the default partition, amber under 2 months (issue 5)."""
    if months is None:
        return "green" if not default_rows else "amber"
    if months <= 0 or default_rows:
        return "red"
    return "amber" if months < settings.MONITORING_PARTITION_MONTHS_AMBER else "green"


def materialized_views() -> list[dict]:
    """Registered views with their refresh history (project.matviews), plus any other view the
    database has, so an unregistered one is seen too."""
    from project.matviews import materialized_view_status

    with catalog_cursor() as cursor:
        registered = materialized_view_status()  # its size reads run under this cursor's timeouts
        locked = locked_relations(cursor)
        others = fetch_all(
            cursor,
            f"""
            SELECT c.relname AS name, n.nspname AS schema, m.ispopulated AS populated,
                   CASE WHEN NOT c.oid = ANY(%s::oid[]) THEN pg_total_relation_size(c.oid) END AS size_bytes
            FROM pg_matviews m
            JOIN pg_class c ON c.relname = m.matviewname
            JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = m.schemaname
            WHERE {USER_SCHEMAS}
            ORDER BY n.nspname, c.relname
            """,
            [list(locked)],
        )
    known = {view["name"] for view in registered}
    views = [{**view, "registered": True} for view in registered]
    views += [
        {
            # Registered views live in the default schema; another schema's is named with its own.
            "name": other["name"] if other["schema"] == "public" else f"{other['schema']}.{other['name']}",
            "registered": False,
            "refresh_every_s": None,
            "last_refreshed_at": None,
            "last_duration_ms": None,
            "last_status": None,
            "staleness_s": None,
            "stale": None,
            "populated": other["populated"],
            "size_bytes": other["size_bytes"],
        }
        for other in others
        if other["schema"] != "public" or other["name"] not in known
    ]
    return views
