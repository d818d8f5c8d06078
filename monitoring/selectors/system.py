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
    integer column on a bigint sequence overflows at 2^31, long before the sequence does)."""
    with catalog_cursor() as cursor:
        rows = fetch_all(
            cursor,
            """
            SELECT s.schemaname AS schema, s.sequencename AS sequence, s.last_value, s.max_value,
                   s.increment_by, t.relname AS "table", a.attname AS "column",
                   format_type(a.atttypid, a.atttypmod) AS column_type,
                   LEAST(s.max_value, CASE a.atttypid WHEN 'int2'::regtype THEN 32767
                                                      WHEN 'int4'::regtype THEN 2147483647
                                                      ELSE s.max_value END) AS limit_value
            FROM pg_sequences s
            JOIN pg_namespace sn ON sn.nspname = s.schemaname
            JOIN pg_class sc ON sc.relname = s.sequencename AND sc.relnamespace = sn.oid
            LEFT JOIN pg_depend d ON d.objid = sc.oid AND d.classid = 'pg_class'::regclass
                 AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
            LEFT JOIN pg_class t ON t.oid = d.refobjid
            LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
            WHERE s.increment_by > 0
            """,
        )
    for row in rows:
        row["used_ratio"] = (row["last_value"] or 0) / row["limit_value"] if row["limit_value"] else None
        row["near_overflow"] = (row["used_ratio"] or 0) > settings.MONITORING_SEQUENCE_USED_MAX
    rows.sort(key=lambda row: row["used_ratio"] or 0, reverse=True)
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
            SELECT c.oid::regclass::text AS "table", age(c.relfrozenxid) AS xid_age
            FROM pg_class c WHERE c.relkind IN ('r', 'm', 't') AND c.relfrozenxid <> 0
            ORDER BY age(c.relfrozenxid) DESC LIMIT 5
            """,
        )
    return {
        **db,
        "xid_limit": XID_LIMIT,
        "headroom": XID_LIMIT - db["xid_age"],
        "used_ratio": db["xid_age"] / XID_LIMIT,
        "oldest_tables": oldest,
    }
