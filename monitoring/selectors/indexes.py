"""Index usage: every index with its size and scans, and PgHero's findings plus what it hides.

Partitioned tables are shown as one table: a partitioned index's figures are the sums over its
partitions' indexes (pg_partition_tree), and it is traced to the `Meta.indexes` entry that made it.
"""

from dataclasses import dataclass

from django.conf import settings

from monitoring.selectors.base import catalog_cursor, extension_installed, fetch_all, locked_relations, ratio
from monitoring.selectors.tracing import model_for_table, rebuild_code, removal_code, trace_index

USER_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'"

INDEXES_SQL = f"""
WITH RECURSIVE idx AS (
    SELECT i.indexrelid, i.indrelid, n.nspname AS schema, tc.relname AS "table", ic.relname AS index,
           am.amname AS method, i.indisunique AS is_unique, i.indisprimary AS is_primary,
           i.indisvalid AS is_valid, i.indnkeyatts AS key_count,
           string_to_array(i.indkey::text, ' ')::int[] AS columns,
           string_to_array(i.indclass::text, ' ')::oid[] AS opclasses,
           string_to_array(i.indoption::text, ' ')::int[] AS options,
           -- pg_get_indexdef() and pg_get_expr() open the table: skipped while DDL holds or awaits it
           i.indrelid = ANY(%(locked)s::oid[]) AS table_locked,
           CASE WHEN NOT i.indrelid = ANY(%(locked)s::oid[]) THEN coalesce(pg_get_expr(i.indexprs, i.indrelid), '')
                ELSE coalesce(i.indexprs::text, '') END AS expressions,
           CASE WHEN NOT i.indrelid = ANY(%(locked)s::oid[]) THEN coalesce(pg_get_expr(i.indpred, i.indrelid), '')
                ELSE coalesce(i.indpred::text, '') END AS predicate,
           CASE WHEN NOT i.indrelid = ANY(%(locked)s::oid[]) THEN pg_get_indexdef(i.indexrelid) END AS definition,
           EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) AS backs_constraint,
           -- a foreign key of the table whose columns lead this index: FK checks and ON DELETE
           -- cascades from the referenced table look rows up through it
           (SELECT f.conname FROM pg_constraint f
            WHERE f.conrelid = i.indrelid AND f.contype = 'f' AND cardinality(f.conkey) <= i.indnkeyatts
              AND ARRAY(SELECT k FROM unnest(f.conkey) AS k ORDER BY k)
                  = ARRAY(SELECT k FROM unnest((string_to_array(i.indkey::text, ' ')::int2[])[1:cardinality(f.conkey)])
                          AS k ORDER BY k)
            ORDER BY f.conname LIMIT 1) AS foreign_key,
           ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, pos)
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                 WHERE k.pos <= i.indnkeyatts ORDER BY k.pos) AS key_names
    FROM pg_index i
    JOIN pg_class ic ON ic.oid = i.indexrelid
    JOIN pg_class tc ON tc.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = tc.relnamespace
    JOIN pg_am am ON am.oid = ic.relam
    WHERE {USER_SCHEMAS} AND NOT ic.relispartition
),
-- Each index with its partitions' indexes, walked through pg_inherits: pg_partition_tree() would
-- lock every partition and queue behind DDL.
tree AS (
    SELECT idx.indexrelid AS root, idx.indexrelid AS relid FROM idx
    UNION ALL
    SELECT tree.root, inh.inhrelid FROM tree JOIN pg_inherits inh ON inh.inhparent = tree.relid
),
figures AS (
    SELECT tree.root,
           -- size functions queue behind an ACCESS EXCLUSIVE lock: skipped (base.locked_relations)
           sum(CASE WHEN NOT leaf.oid = ANY(%(locked)s::oid[]) THEN pg_relation_size(leaf.oid) END)::bigint
               AS size_bytes,
           array_agg(leaf.oid::bigint) FILTER (WHERE leaf.oid = ANY(%(locked)s::oid[])) AS locked_oids,
           coalesce(sum(st.idx_scan), 0)::bigint AS idx_scan,
           coalesce(sum(st.idx_tup_read), 0)::bigint AS idx_tup_read,
           coalesce(sum(st.idx_tup_fetch), 0)::bigint AS idx_tup_fetch,
           {{last_idx_scan}} AS last_idx_scan,
           count(*) FILTER (WHERE leaf.oid <> tree.root) AS partitions
    FROM tree
    JOIN pg_class leaf ON leaf.oid = tree.relid AND leaf.relkind = 'i'
    LEFT JOIN pg_stat_all_indexes st ON st.indexrelid = leaf.oid
    GROUP BY tree.root
)
SELECT idx.*, coalesce(s.idx_scan, 0) AS idx_scan, coalesce(s.idx_tup_read, 0) AS idx_tup_read,
       coalesce(s.idx_tup_fetch, 0) AS idx_tup_fetch, s.last_idx_scan, coalesce(s.partitions, 0) AS partitions,
       CASE WHEN s.locked_oids IS NULL THEN coalesce(s.size_bytes, 0) END AS size_bytes, s.locked_oids
FROM idx
LEFT JOIN figures s ON s.root = idx.indexrelid
ORDER BY s.size_bytes DESC NULLS LAST, idx.schema, idx.index
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
-- pg_partition_root() is a regclass, which arrives as a name: the key is the oid.
SELECT root::oid::bigint AS indexrelid,
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


def _rank(index: dict) -> tuple[bool, bool, bool]:
    # Of two identical indexes, the one a constraint stands on, or else the unique one, or else
    # the one queries use, is kept: flagging the used twin "duplicate" while the other is flagged
    # "unused" would have both dropped.
    return (index["is_primary"] or index["backs_constraint"], index["is_unique"], _used(index))


def _used(index: dict) -> bool:
    return bool(index.get("idx_scan"))


def find_duplicates(indexes: list[dict]) -> dict[int, dict]:
    """{indexrelid of a redundant index: the valid index that covers it}.

    An index is redundant when another valid index of its table has its columns as a prefix,
    with the same method, expressions and predicate. A unique index is never redundant to a
    longer one (its uniqueness is a rule, not only a lookup), and of two identical indexes one is
    kept: the one backing a constraint, else the unique one, else the used one, else the older.
    An index queries use is never called redundant to one they do not use.
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
                if _used(a) and not _used(b):
                    continue  # b is the one to drop (unused); a, which queries use, stays
                if _covers(b, a):  # identical
                    if _rank(a) > _rank(b) or (_rank(a) == _rank(b) and a["indexrelid"] < b["indexrelid"]):
                        continue
                elif a["is_unique"]:
                    continue
                redundant[a["indexrelid"]] = b
                break
    return redundant


def _index_row(index: dict, *, duplicate_of: dict | None, estimate: dict | None, locked: dict, limits,
               days: float) -> dict:  # fmt: skip
    """One index as the page shows it: its figures, findings (unused, duplicate, invalid) and the fix."""
    trace = trace_index(index["table"], index["index"], index["key_names"], schema=index["schema"])
    flags = []
    unused = (
        index["idx_scan"] == 0
        and not _keeps_constraint(index)
        and index["is_valid"]
        and index["size_bytes"] is not None
        and index["size_bytes"] >= limits.unused_min_bytes
    )
    if unused:
        flags.append("unused")
    if duplicate_of is not None:
        flags.append("duplicate")
    if not index["is_valid"]:
        flags.append("invalid")
    fix = ""
    if "invalid" in flags:
        fix = rebuild_code(trace)
    elif unused or duplicate_of is not None:
        fix = removal_code(trace)
    drop_sql = ""
    if (unused or duplicate_of is not None) and not _keeps_constraint(index) and _outside_models(trace):
        drop_sql = f"DROP INDEX CONCURRENTLY IF EXISTS {_quote(index['schema'])}.{_quote(index['index'])};"
    warnings = []
    if index["foreign_key"] and (unused or duplicate_of is not None):
        warnings.append(
            f"Serves foreign key {index['foreign_key']}: its checks and ON DELETE cascades from the "
            "referenced table look rows up through this index (and do not show as scans of it); "
            "without it each one reads the whole table."
        )
    locked_oids = index.pop("locked_oids") or []
    return {
        "oid": index["indexrelid"],
        "schema": index["schema"],
        "table": index["table"],
        "index": index["index"],
        "name": f"{index['schema']}.{index['index']}",
        "size_unavailable": "; ".join(f"size unavailable: {locked[oid]}" for oid in locked_oids) or None,
        "foreign_key": index["foreign_key"],
        "warnings": warnings,
        "drop_sql": drop_sql,
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


def index_usage(*, with_bloat: bool = True) -> dict:
    """Every index, its findings, and the tables that look like they miss one."""
    limits = thresholds()
    with catalog_cursor() as cursor:
        last_scan = "max(st.last_idx_scan)" if _server_version(cursor) >= 160000 else "NULL::timestamptz"
        locked = locked_relations(cursor)
        indexes = fetch_all(cursor, INDEXES_SQL.replace("{last_idx_scan}", last_scan), {"locked": list(locked)})
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
    for index in indexes:
        if index["definition"] is None:
            index["definition"] = (
                f"CREATE INDEX {index['index']} ON {index['schema']}.{index['table']} USING {index['method']} "
                f"({', '.join(index['key_names'])}) -- full definition unavailable: {locked[index['indrelid']]}"
            )
    duplicates = find_duplicates(indexes)
    rows = [
        _index_row(
            index,
            duplicate_of=duplicates.get(index["indexrelid"]),
            estimate=bloat.get(index["indexrelid"]),
            locked=locked,
            limits=limits,
            days=days,
        )
        for index in indexes
    ]
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


def _outside_models(trace) -> bool:
    """No model's migration stands behind the index: it needs plain SQL to go."""
    return trace is None or (trace.index is None and trace.field is None and trace.source.startswith("no index"))


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def missing_index_tables(cursor, limits: IndexThresholds) -> list[dict]:
    """Tables of >= 10,000 live rows whose scans use an index less than 95% of the time (PgHero).

    A partitioned table's partitions count as the table.
    """
    rows = fetch_all(
        cursor,
        """
        SELECT rn.nspname AS schema, r.relname AS "table",
               sum(st.n_live_tup)::bigint AS live_rows,
               sum(st.seq_scan)::bigint AS seq_scan,
               sum(coalesce(st.idx_scan, 0))::bigint AS idx_scan,
               sum(st.seq_tup_read)::bigint AS seq_tup_read
        FROM pg_stat_user_tables st
        JOIN pg_class r ON r.oid = coalesce(pg_partition_root(st.relid), st.relid)
        JOIN pg_namespace rn ON rn.oid = r.relnamespace
        GROUP BY 1, 2
        HAVING sum(st.n_live_tup) >= %s
           AND sum(coalesce(st.idx_scan, 0)) < %s * (sum(st.seq_scan) + sum(coalesce(st.idx_scan, 0)))
        ORDER BY sum(st.seq_tup_read) DESC
        """,
        [limits.missing_index_min_rows, limits.missing_index_min_use],
    )
    for row in rows:
        row["index_use"] = ratio(row["idx_scan"], row["seq_scan"] + row["idx_scan"])
        row["name"] = f"{row['schema']}.{row['table']}"
        row["model"] = model_for_table(row["table"], schema=row["schema"])
    return rows


def index_bloat_exact(oid: int) -> dict:
    """pgstatindex() of one btree index (or each partition's): reads the whole index, so it is
    asked for one index at a time, never for the page.

    avg_leaf_density is over the live leaf pages only: deleted and empty pages (still on disk
    until a REINDEX, reused only by later splits) are counted here as waste too, so an index
    of mostly deleted pages is not reported as dense.
    """
    with catalog_cursor() as cursor:
        if not extension_installed(cursor, "pgstattuple"):
            return {"available": False}
        rows = fetch_all(
            cursor,
            """
            WITH RECURSIVE tree AS (
                SELECT %s::oid AS relid
                UNION ALL SELECT inh.inhrelid FROM tree JOIN pg_inherits inh ON inh.inhparent = tree.relid
            )
            SELECT t.relid::regclass::text AS index, s.index_size, s.avg_leaf_density, s.leaf_fragmentation,
                   s.leaf_pages, s.internal_pages, s.empty_pages, s.deleted_pages,
                   current_setting('block_size')::int AS block_size
            FROM tree AS t
            JOIN pg_class leaf ON leaf.oid = t.relid AND leaf.relkind = 'i'
                 AND leaf.relam = (SELECT oid FROM pg_am WHERE amname = 'btree')  -- pgstatindex reads btrees only
            CROSS JOIN LATERAL pgstatindex(t.relid) AS s
            """,
            [oid],
        )
    for row in rows:
        row.update(_exact_figures(row))
    size = sum(row["index_size"] for row in rows)
    wasted = sum(row["wasted_bytes"] for row in rows)
    return {"available": True, "parts": rows, "index_bytes": size, "bloat_ratio": ratio(wasted, size)}


def _exact_figures(part: dict) -> dict:
    """Density over every leaf-level page (live, empty and deleted) and the bytes a rebuild frees."""
    leaf, empty, deleted = part["leaf_pages"], part["empty_pages"], part["deleted_pages"]
    density = part["avg_leaf_density"]
    # pgstatindex answers NaN density for an index with no live leaf page.
    live_density = 0.0 if density is None or density != density else float(density) / 100
    all_leaf = leaf + empty + deleted
    effective = live_density * leaf / all_leaf if all_leaf else None
    wasted_pages = empty + deleted + leaf * (1 - live_density)
    return {
        "effective_leaf_density": None if effective is None else round(effective * 100, 2),
        "wasted_bytes": int(wasted_pages * part["block_size"]),
    }
