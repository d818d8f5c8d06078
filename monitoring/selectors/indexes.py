"""Index usage: every index with its size and scans, and PgHero's findings plus what it hides.

Partitioned tables are shown as one table: a partitioned index's figures are the sums over its
partitions' indexes (pg_partition_tree), and it is traced to the `Meta.indexes` entry that made it.
"""

from dataclasses import dataclass

from django.conf import settings

from monitoring.selectors.base import catalog_cursor, extension_installed, fetch_all, ratio
from monitoring.selectors.tracing import model_for_table, rebuild_code, removal_code, trace_index

USER_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'"

INDEXES_SQL = f"""
WITH idx AS (
    SELECT i.indexrelid, i.indrelid, n.nspname AS schema, tc.relname AS "table", ic.relname AS index,
           am.amname AS method, i.indisunique AS is_unique, i.indisprimary AS is_primary,
           i.indisvalid AS is_valid, i.indnkeyatts AS key_count,
           string_to_array(i.indkey::text, ' ')::int[] AS columns,
           string_to_array(i.indclass::text, ' ')::oid[] AS opclasses,
           string_to_array(i.indoption::text, ' ')::int[] AS options,
           coalesce(pg_get_expr(i.indexprs, i.indrelid), '') AS expressions,
           coalesce(pg_get_expr(i.indpred, i.indrelid), '') AS predicate,
           pg_get_indexdef(i.indexrelid) AS definition,
           EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) AS backs_constraint,
           ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, pos)
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                 WHERE k.pos <= i.indnkeyatts ORDER BY k.pos) AS key_names
    FROM pg_index i
    JOIN pg_class ic ON ic.oid = i.indexrelid
    JOIN pg_class tc ON tc.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = tc.relnamespace
    JOIN pg_am am ON am.oid = ic.relam
    WHERE {USER_SCHEMAS} AND NOT ic.relispartition
)
SELECT idx.*, s.size_bytes, s.idx_scan, s.idx_tup_read, s.idx_tup_fetch, s.last_idx_scan, s.partitions
FROM idx
CROSS JOIN LATERAL (
    SELECT coalesce(sum(pg_relation_size(t.relid)), 0)::bigint AS size_bytes,
           coalesce(sum(st.idx_scan), 0)::bigint AS idx_scan,
           coalesce(sum(st.idx_tup_read), 0)::bigint AS idx_tup_read,
           coalesce(sum(st.idx_tup_fetch), 0)::bigint AS idx_tup_fetch,
           {{last_idx_scan}} AS last_idx_scan,
           count(*) FILTER (WHERE t.relid <> idx.indexrelid) AS partitions
    -- pg_partition_tree() is empty for a plain index: the leaves are then the index itself.
    FROM (SELECT p.relid FROM pg_partition_tree(idx.indexrelid) AS p WHERE p.isleaf
          UNION SELECT idx.indexrelid::regclass) AS t
    JOIN pg_class leaf ON leaf.oid = t.relid AND leaf.relkind = 'i'
    LEFT JOIN pg_stat_all_indexes st ON st.indexrelid = t.relid
) AS s
ORDER BY s.size_bytes DESC, idx.index
"""

# The standard btree bloat estimate (ioguix/pgsql-bloat-estimation, as check_postgres and most
# dashboards use it): expected pages from reltuples and the columns' average width in pg_stats,
# compared with relpages. Leaf partitions' figures are added up to their partitioned index.
BTREE_BLOAT_SQL = """
WITH leaf AS (
    SELECT ci.oid AS idxoid, i.indrelid AS tbloid, ci.reltuples, ci.relpages, i.indnatts, i.indkey,
           coalesce(substring(array_to_string(ci.reloptions, ' ') FROM 'fillfactor=([0-9]+)')::int, 90) AS fillfactor,
           coalesce(pg_partition_root(ci.oid), ci.oid) AS root
    FROM pg_index i
    JOIN pg_class ci ON ci.oid = i.indexrelid
    JOIN pg_namespace n ON n.oid = ci.relnamespace
    WHERE ci.relam = (SELECT oid FROM pg_am WHERE amname = 'btree') AND ci.relpages > 0
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
),
cols AS (
    SELECT leaf.idxoid, max(coalesce(s.null_frac, 0)) AS max_null_frac,
           sum((1 - coalesce(s.null_frac, 0)) * coalesce(s.avg_width, 1024)) AS data_width
    FROM leaf
    CROSS JOIN LATERAL generate_series(1, leaf.indnatts) AS pos
    LEFT JOIN pg_attribute a ON a.attrelid = CASE WHEN leaf.indkey[pos - 1] = 0 THEN leaf.idxoid ELSE leaf.tbloid END
        AND a.attnum = CASE WHEN leaf.indkey[pos - 1] = 0 THEN pos ELSE leaf.indkey[pos - 1] END
    LEFT JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = a.attname
    GROUP BY leaf.idxoid
),
est AS (
    SELECT leaf.root, leaf.relpages, leaf.fillfactor, leaf.reltuples,
           -- tuple header (8, or 8 + null bitmap) and data, each max-aligned (8 bytes on 64-bit)
           (CASE WHEN cols.max_null_frac = 0 THEN 8 ELSE 12 END + 7) / 8 * 8
             + (ceil(cols.data_width)::int + 7) / 8 * 8 AS tuple_width
    FROM leaf JOIN cols USING (idxoid)
)
SELECT root AS indexrelid,
       sum(relpages)::bigint * current_setting('block_size')::bigint AS real_bytes,
       sum(GREATEST(relpages - (1 + ceil(reltuples / floor((current_setting('block_size')::int - 24 - 16)
           * fillfactor / (100.0 * (4 + tuple_width))))), 0))::bigint
           * current_setting('block_size')::bigint AS bloat_bytes
FROM est
GROUP BY root
"""


@dataclass(frozen=True)
class IndexThresholds:
    unused_min_bytes: int
    missing_index_min_rows: int
    missing_index_min_use: float = 0.95  # PgHero: index use < 95% on a table of >= 10,000 rows


def thresholds() -> IndexThresholds:
    return IndexThresholds(
        unused_min_bytes=settings.MONITORING_UNUSED_INDEX_MIN_BYTES,
        missing_index_min_rows=settings.MONITORING_MISSING_INDEX_MIN_ROWS,
    )


def _server_version(cursor) -> int:
    cursor.execute("SELECT current_setting('server_version_num')::int")
    return cursor.fetchone()[0]


def _covers(a: dict, b: dict) -> bool:
    """b can serve every lookup a serves: same method, expressions and predicate, a's key columns
    (with their operator classes and order options) a prefix of b's, a's INCLUDE columns in b."""
    if a["method"] != b["method"] or a["expressions"] != b["expressions"] or a["predicate"] != b["predicate"]:
        return False
    n = a["key_count"]
    if n > b["key_count"]:
        return False
    if a["columns"][:n] != b["columns"][:n] or a["opclasses"][:n] != b["opclasses"][:n]:
        return False
    if n > 1 and a["options"][:n] != b["options"][:n]:
        return False
    return set(a["columns"][n:]) <= set(b["columns"])


def _keeps_constraint(index: dict) -> bool:
    return index["is_unique"] or index["is_primary"] or index["backs_constraint"]


def _rank(index: dict) -> tuple[bool, bool]:
    # Of two identical indexes, the one a constraint stands on, or else the unique one, is kept.
    return (index["is_primary"] or index["backs_constraint"], index["is_unique"])


def find_duplicates(indexes: list[dict]) -> dict[int, dict]:
    """{indexrelid of a redundant index: the valid index that covers it}.

    An index is redundant when another valid index of its table has its columns as a prefix,
    with the same method, expressions and predicate. A unique index is never redundant to a
    longer one (its uniqueness is a rule, not only a lookup), and of two identical indexes one is
    kept: the one backing a constraint, else the unique one, else the older.
    """
    by_table: dict[int, list[dict]] = {}
    for index in indexes:
        by_table.setdefault(index["indrelid"], []).append(index)
    redundant = {}
    for group in by_table.values():
        for a in group:
            if a["is_primary"] or a["backs_constraint"]:
                continue
            for b in group:
                if a is b or not b["is_valid"] or not _covers(a, b):
                    continue
                if _covers(b, a):  # identical
                    if _rank(a) > _rank(b) or (_rank(a) == _rank(b) and a["indexrelid"] < b["indexrelid"]):
                        continue
                elif a["is_unique"]:
                    continue
                redundant[a["indexrelid"]] = b
                break
    return redundant


def index_usage(*, with_bloat: bool = True) -> dict:
    """Every index, its findings, and the tables that look like they miss one."""
    limits = thresholds()
    with catalog_cursor() as cursor:
        last_scan = "max(st.last_idx_scan)" if _server_version(cursor) >= 160000 else "NULL::timestamptz"
        indexes = fetch_all(cursor, INDEXES_SQL.replace("{last_idx_scan}", last_scan))
        bloat = {row["indexrelid"]: row for row in fetch_all(cursor, BTREE_BLOAT_SQL)} if with_bloat else {}
        cursor.execute(
            "SELECT coalesce(stats_reset, pg_postmaster_start_time()) FROM pg_stat_database "
            "WHERE datname = current_database()"
        )
        stats_since = cursor.fetchone()[0]
        cursor.execute("SELECT now()")
        now = cursor.fetchone()[0]
        has_pgstattuple = extension_installed(cursor, "pgstattuple")
        missing = missing_index_tables(cursor, limits)
    days = max((now - stats_since).total_seconds() / 86400, 1 / 24)
    duplicates = find_duplicates(indexes)
    rows = []
    for index in indexes:
        trace = trace_index(index["table"], index["index"], index["key_names"])
        flags = []
        unused = (
            index["idx_scan"] == 0
            and not _keeps_constraint(index)
            and index["is_valid"]
            and index["size_bytes"] >= limits.unused_min_bytes
        )
        if unused:
            flags.append("unused")
        duplicate_of = duplicates.get(index["indexrelid"])
        if duplicate_of is not None:
            flags.append("duplicate")
        if not index["is_valid"]:
            flags.append("invalid")
        estimate = bloat.get(index["indexrelid"])
        fix = ""
        if "invalid" in flags:
            fix = rebuild_code(trace)
        elif unused or duplicate_of is not None:
            fix = removal_code(trace)
        rows.append(
            {
                "oid": index["indexrelid"],
                "schema": index["schema"],
                "table": index["table"],
                "index": index["index"],
                "method": index["method"],
                "definition": index["definition"],
                "columns": index["key_names"],
                "is_unique": index["is_unique"],
                "is_primary": index["is_primary"],
                "is_valid": index["is_valid"],
                "partitions": index["partitions"],
                "size_bytes": index["size_bytes"],
                "idx_scan": index["idx_scan"],
                "idx_tup_read": index["idx_tup_read"],
                "idx_tup_fetch": index["idx_tup_fetch"],
                "last_idx_scan": index["last_idx_scan"],
                "scans_per_day": round(index["idx_scan"] / days, 1),
                "bloat_bytes": estimate["bloat_bytes"] if estimate else None,
                "bloat_ratio": ratio(estimate["bloat_bytes"], estimate["real_bytes"]) if estimate else None,
                "flags": flags,
                "duplicate_of": duplicate_of["index"] if duplicate_of else None,
                "duplicate_of_definition": duplicate_of["definition"] if duplicate_of else None,
                "model": trace.model if trace else None,
                "source": trace.source if trace else None,
                "fix_migration": fix,
            }
        )
    return {
        "stats_since": stats_since,
        "pgstattuple_installed": has_pgstattuple,
        "thresholds": {
            "unused_min_bytes": limits.unused_min_bytes,
            "missing_index_min_rows": limits.missing_index_min_rows,
            "missing_index_min_use": limits.missing_index_min_use,
        },
        "indexes": rows,
        "missing_index_tables": missing,
    }


def missing_index_tables(cursor, limits: IndexThresholds) -> list[dict]:
    """Tables of >= 10,000 live rows whose scans use an index less than 95% of the time (PgHero).

    A partitioned table's partitions count as the table.
    """
    rows = fetch_all(
        cursor,
        """
        SELECT coalesce(pg_partition_root(st.relid), st.relid)::regclass::text AS "table",
               sum(st.n_live_tup)::bigint AS live_rows,
               sum(st.seq_scan)::bigint AS seq_scan,
               sum(coalesce(st.idx_scan, 0))::bigint AS idx_scan,
               sum(st.seq_tup_read)::bigint AS seq_tup_read
        FROM pg_stat_user_tables st
        GROUP BY 1
        HAVING sum(st.n_live_tup) >= %s
           AND sum(coalesce(st.idx_scan, 0)) < %s * (sum(st.seq_scan) + sum(coalesce(st.idx_scan, 0)))
        ORDER BY sum(st.seq_tup_read) DESC
        """,
        [limits.missing_index_min_rows, limits.missing_index_min_use],
    )
    for row in rows:
        row["index_use"] = ratio(row["idx_scan"], row["seq_scan"] + row["idx_scan"])
        row["model"] = model_for_table(row["table"].split(".")[-1].strip('"'))
    return rows


def index_bloat_exact(oid: int) -> dict:
    """pgstatindex() of one btree index (or each partition's): reads the whole index, so it is
    asked for one index at a time, never for the page."""
    with catalog_cursor() as cursor:
        if not extension_installed(cursor, "pgstattuple"):
            return {"available": False}
        rows = fetch_all(
            cursor,
            """
            SELECT t.relid::regclass::text AS index, s.index_size, s.avg_leaf_density, s.leaf_fragmentation
            FROM (SELECT p.relid FROM pg_partition_tree(%s::oid::regclass) AS p WHERE p.isleaf
                  UNION SELECT %s::oid::regclass) AS t
            JOIN pg_class leaf ON leaf.oid = t.relid AND leaf.relkind = 'i'
                 AND leaf.relam = (SELECT oid FROM pg_am WHERE amname = 'btree')  -- pgstatindex reads btrees only
            CROSS JOIN LATERAL pgstatindex(t.relid) AS s
            """,
            [oid, oid],
        )
    return {"available": True, "parts": rows}
