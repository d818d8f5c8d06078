"""This node (psutil) and the database's own limits: size, sequences, transaction-id headroom."""

import os

import psutil
from django.conf import settings

from monitoring.selectors.base import catalog_cursor, fetch_all

# psutil measures CPU between two calls: the first call (here, at import) starts the clock, so
# a page shows the use since the previous look instead of blocking for a sampling interval.
psutil.cpu_percent(interval=None)

# PostgreSQL refuses new transaction ids 3 million before 2^31 (wraparound protection).
XID_LIMIT = 2**31 - 3_000_000
WRAPAROUND_RED_RATIO = 0.5


def node() -> dict:
    memory = psutil.virtual_memory()
    process = psutil.Process()
    load1, load5, load15 = os.getloadavg()
    disk = psutil.disk_usage(str(settings.VAR_DIR if settings.VAR_DIR.exists() else "/"))
    return {
        "cpu_percent": psutil.cpu_percent(interval=None),
        "cpu_count": psutil.cpu_count(),
        "load_average": [load1, load5, load15],
        "memory_total_bytes": memory.total,
        "memory_available_bytes": memory.available,
        "memory_percent": memory.percent,
        "swap_percent": psutil.swap_memory().percent,
        "disk_total_bytes": disk.total,
        "disk_free_bytes": disk.free,
        "disk_percent": disk.percent,
        "process": {
            "pid": process.pid,
            "rss_bytes": process.memory_info().rss,
            "threads": process.num_threads(),
            "role": settings.OPSDECK_ROLE,
        },
        "processes": len(psutil.pids()),
    }


def database() -> dict:
    with catalog_cursor() as cursor:
        (row,) = fetch_all(
            cursor,
            """
            SELECT current_database() AS name, pg_database_size(current_database()) AS size_bytes,
                   version() AS version, pg_postmaster_start_time() AS started_at,
                   (SELECT count(*) FROM pg_stat_activity WHERE state = 'active'
                      AND backend_type = 'client backend') AS active_connections,
                   d.xact_commit, d.xact_rollback, d.deadlocks, d.temp_bytes, d.conflicts
            FROM pg_stat_database d WHERE d.datname = current_database()
            """,
        )
    return row


def sequences() -> list[dict]:
    """Every sequence with how much of its range is used, bounded by the column it feeds (an
    integer column on a bigint sequence overflows at 2^31, long before the sequence does).

    The column is found through the sequence's ownership (serial, identity: `OWNED BY`) or else
    through a column DEFAULT that calls nextval() on it (a sequence created by hand and never
    owned); when several columns use one sequence, the narrowest bounds it.
    """
    with catalog_cursor() as cursor:
        rows = fetch_all(
            cursor,
            """
            WITH fed AS (
                -- owned by a column (serial, identity)
                SELECT d.objid AS seqoid, d.refobjid AS relid, d.refobjsubid AS attnum
                FROM pg_depend d JOIN pg_class sq ON sq.oid = d.objid AND sq.relkind = 'S'
                WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                  AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
                UNION
                -- named in a column's DEFAULT nextval(...)
                SELECT d.refobjid, ad.adrelid, ad.adnum
                FROM pg_depend d JOIN pg_attrdef ad ON ad.oid = d.objid
                JOIN pg_class sq ON sq.oid = d.refobjid AND sq.relkind = 'S'
                WHERE d.classid = 'pg_attrdef'::regclass AND d.refclassid = 'pg_class'::regclass
            ),
            fed_columns AS MATERIALIZED (
                SELECT fed.seqoid, t.relname AS "table", a.attname AS "column",
                       format_type(a.atttypid, a.atttypmod) AS column_type,
                       CASE a.atttypid WHEN 'int2'::regtype THEN 32767
                                       WHEN 'int4'::regtype THEN 2147483647 END AS column_max,
                       tn.nspname AS table_schema
                FROM fed
                JOIN pg_class t ON t.oid = fed.relid
                JOIN pg_namespace tn ON tn.oid = t.relnamespace
                JOIN pg_attribute a ON a.attrelid = fed.relid AND a.attnum = fed.attnum AND NOT a.attisdropped
            )
            SELECT DISTINCT ON (sc.oid)
                   s.schemaname AS schema, s.sequencename AS sequence, s.last_value, s.max_value,
                   s.increment_by, f.table_schema, f."table", f."column", f.column_type,
                   LEAST(s.max_value, coalesce(f.column_max, s.max_value)) AS limit_value
            FROM pg_sequences s
            JOIN pg_namespace sn ON sn.nspname = s.schemaname
            JOIN pg_class sc ON sc.relname = s.sequencename AND sc.relnamespace = sn.oid
            LEFT JOIN fed_columns f ON f.seqoid = sc.oid
            WHERE s.increment_by > 0
            ORDER BY sc.oid, LEAST(s.max_value, coalesce(f.column_max, s.max_value))
            """,
        )
    for row in rows:
        row["name"] = f"{row['schema']}.{row['sequence']}"
        row["used_ratio"] = (row["last_value"] or 0) / row["limit_value"] if row["limit_value"] else None
        row["near_overflow"] = (row["used_ratio"] or 0) > settings.MONITORING_SEQUENCE_USED_MAX
    rows.sort(key=lambda row: (-(row["used_ratio"] or 0), row["name"]))
    return rows


def wraparound() -> dict:
    """Transaction-id age of the database and its oldest tables, against the 2^31 limit."""
    with catalog_cursor() as cursor:
        (db,) = fetch_all(
            cursor,
            """
            SELECT age(datfrozenxid) AS xid_age, mxid_age(datminmxid) AS mxid_age,
                   current_setting('autovacuum_freeze_max_age')::bigint AS freeze_max_age
            FROM pg_database WHERE datname = current_database()
            """,
        )
        oldest = fetch_all(
            cursor,
            """
            SELECT c.oid::bigint AS oid, n.nspname AS schema, c.relname AS "table",
                   n.nspname || '.' || c.relname AS name, c.relkind = 't' AS toast, age(c.relfrozenxid) AS xid_age
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'm', 't') AND c.relfrozenxid <> 0
            ORDER BY age(c.relfrozenxid) DESC LIMIT 5
            """,
        )
    used = db["xid_age"] / XID_LIMIT
    return {
        **db,
        "xid_limit": XID_LIMIT,
        "headroom": XID_LIMIT - db["xid_age"],
        "used_ratio": used,
        "status": wraparound_status(used, db["xid_age"], db["freeze_max_age"]),
        "oldest_tables": oldest,
    }


def wraparound_status(used_ratio: float, xid_age: int, freeze_max_age: int) -> str:
    """Red past half the way to wraparound (the Overview's critical finding), amber once the age
    passed autovacuum_freeze_max_age (anti-wraparound autovacuum should have frozen it)."""
    if used_ratio > WRAPAROUND_RED_RATIO:
        return "red"
    return "amber" if xid_age > freeze_max_age else "green"
