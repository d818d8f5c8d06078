"""Index advisor: indexes the costly statements of pg_stat_statements lack, verified with HypoPG.

PgHero suggests indexes from slow queries; Dexter verifies candidates with hypothetical indexes.
This does both: the statements are parsed (monitoring.advisor), each table's candidate btree is
checked against the indexes it already has, then, where the `hypopg` extension is installed,
the statement is EXPLAINed with and without a hypothetical index (session-local, removed with
hypopg_reset() afterwards) and only a candidate the planner uses at a real cost reduction is
kept. Without HypoPG a candidate is shown unverified, with the selectivity evidence of pg_stats.
"""

import json
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError

from monitoring.advisor import Relation, analyze, candidates_for, covered_by, parameter_numbers, parse, relations_in
from monitoring.selectors.base import catalog_cursor, extension_installed, fetch_all
from monitoring.selectors.statements import statements_available
from monitoring.selectors.tracing import addition_code

try:  # a raw psycopg cursor (the verification test on another server) raises psycopg's errors
    from psycopg import Error as PsycopgError
except ImportError:  # pragma: no cover
    PsycopgError = DatabaseError

SAVEPOINT = "opsdeck_advisor"  # also the name of the prepared statement EXPLAIN EXECUTE plans
# Planning takes a share lock on the tables: behind a queued ALTER TABLE it would wait. Not for long.
PLAN_LOCK_TIMEOUT = "200ms"
REPRESENTATIVE_LIMIT = "50"  # LIMIT $n: a page of results, as the application asks for

HYPOPG_HELP = (
    "HypoPG is not installed in this database, so candidates are not verified. It ships with "
    "Debian/Ubuntu (postgresql-NN-hypopg), RDS and Cloud SQL: CREATE EXTENSION hypopg;"
)


@dataclass
class TableInfo:
    oid: int
    schema: str
    name: str
    display: str  # schema.table, as the cockpit names tables
    rows: float
    columns: set[str]
    index_keys: list[list[str]]
    stats: dict[str, dict] = field(default_factory=dict)

    def distinct_values(self, column: str) -> float:
        n_distinct = (self.stats.get(column) or {}).get("n_distinct")
        if n_distinct is None:
            return 0.0
        return n_distinct if n_distinct >= 0 else -n_distinct * self.rows


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str | None) -> str:
    # standard_conforming_strings is on since PostgreSQL 9.1: only quotes need doubling.
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


# --- reads --------------------------------------------------------------------------------------


def top_statements(cursor, *, limit: int, min_calls: int) -> list[dict]:
    """This database's top-level statements by total time (an EXPLAIN's or a function's inner
    statements are counted once, where they were issued), one row per queryid."""
    cursor.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'pg_stat_statements'::regclass"
        " AND attname = 'toplevel' AND NOT attisdropped)"
    )
    toplevel = "AND s.toplevel" if cursor.fetchone()[0] else ""
    return fetch_all(
        cursor,
        f"""
        SELECT s.queryid, min(s.query) AS query, sum(s.calls)::bigint AS calls,
               sum(s.total_exec_time) AS total_exec_ms, sum(s.total_exec_time) / sum(s.calls) AS mean_exec_ms
        FROM pg_stat_statements s
        WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND s.queryid IS NOT NULL {toplevel}
        GROUP BY s.queryid
        HAVING sum(s.calls) >= %s
        ORDER BY sum(s.total_exec_time) DESC, s.queryid
        LIMIT %s
        """,
        [min_calls, limit],
    )


def table_catalog(cursor, relations: set[Relation]) -> dict[Relation, TableInfo]:
    """The tables (plain or partitioned) the names resolve to, through this session's search_path:
    columns, btree indexes usable for plain column lookups (valid, no predicate, no expression),
    row estimate (a partitioned table's is the sum of its partitions') and pg_stats."""
    if not relations:
        return {}
    ordered = sorted(relations, key=lambda r: (r.schema or "", r.name))
    rows = fetch_all(
        cursor,
        """
        SELECT r.i, c.oid::bigint AS oid, n.nspname AS schema, c.relname AS name,
               n.nspname || '.' || c.relname AS display,
               CASE WHEN c.relkind = 'p'
                    THEN (SELECT coalesce(sum(GREATEST(l.reltuples, 0)), 0) FROM pg_partition_tree(c.oid) AS p
                          JOIN pg_class l ON l.oid = p.relid WHERE p.isleaf)
                    ELSE GREATEST(c.reltuples, 0) END AS rows,
               ARRAY(SELECT a.attname::text FROM pg_attribute a
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns
        FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS r(schema, name, i)
        JOIN pg_class c ON c.oid = to_regclass(
            CASE WHEN r.schema IS NULL THEN quote_ident(r.name)
                 ELSE quote_ident(r.schema) || '.' || quote_ident(r.name) END)
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p')
        """,
        [[r.schema for r in ordered], [r.name for r in ordered]],
    )
    if not rows:
        return {}
    oids = sorted({row["oid"] for row in rows})
    keys: dict[int, list[list[str]]] = {}
    for index in fetch_all(
        cursor,
        """
        SELECT i.indrelid::bigint AS oid,
               ARRAY(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, pos)
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                     WHERE k.pos <= i.indnkeyatts ORDER BY k.pos) AS keys
        FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
        WHERE i.indrelid = ANY(%s::oid[]) AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
          AND ic.relam = (SELECT oid FROM pg_am WHERE amname = 'btree')
        ORDER BY i.indexrelid
        """,
        [oids],
    ):
        keys.setdefault(index["oid"], []).append(index["keys"])
    stats: dict[int, dict[str, dict]] = {}
    for stat in fetch_all(
        cursor,
        """
        SELECT DISTINCT ON (c.oid, s.attname) c.oid::bigint AS oid, s.attname::text AS column, s.null_frac,
               s.n_distinct, s.correlation, s.most_common_vals::text::text[] AS common_values,
               s.histogram_bounds::text::text[] AS histogram
        FROM pg_stats s
        JOIN pg_namespace n ON n.nspname = s.schemaname
        JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.tablename
        WHERE c.oid = ANY(%s::oid[])
        ORDER BY c.oid, s.attname, s.inherited DESC  -- a partitioned table's stats are its inherited ones
        """,
        [oids],
    ):
        stats.setdefault(stat["oid"], {})[stat["column"]] = stat
    result = {}
    for row in rows:
        info = TableInfo(
            oid=row["oid"],
            schema=row["schema"],
            name=row["name"],
            display=row["display"],
            rows=float(row["rows"]),
            columns=set(row["columns"]),
            index_keys=keys.get(row["oid"], []),
            stats=stats.get(row["oid"], {}),
        )
        result[ordered[row["i"] - 1]] = info
    return result


# --- representative parameters and EXPLAIN ------------------------------------------------------


def _quantile(values: list[str] | None, fraction: float) -> str | None:
    return values[min(int(len(values) * fraction), len(values) - 1)] if values else None


def representative_values(parsed, catalog: dict[Relation, TableInfo]) -> dict[int, str | None]:
    """A value for each `$n` whose column is known, from pg_stats: a typical value for an
    equality (the middle histogram bound: a value outside the most common ones; else the middle
    common value), and for a range the bounds that select about 5% of the rows. LIMIT gets a
    page, OFFSET 0."""
    roles_by_column: dict[tuple, set[str]] = {}
    for use in parsed.params.values():
        roles_by_column.setdefault((use.relation, use.column), set()).add(use.role)
    values: dict[int, str | None] = {}
    for number, use in parsed.params.items():
        if use.role == "limit":
            values[number] = REPRESENTATIVE_LIMIT
            continue
        if use.role == "offset":
            values[number] = "0"
            continue
        info = catalog.get(use.relation)
        stat = info.stats.get(use.column) if info else None
        if not stat:
            continue
        histogram, common = stat["histogram"], stat["common_values"]
        both_ends = {"lower", "upper"} <= roles_by_column[(use.relation, use.column)]
        if use.role in ("eq", "eq_array"):
            value = _quantile(histogram, 0.5) or _quantile(common, 0.5)
            if value is not None and use.role == "eq_array":
                value = '{"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"}'
        elif use.role == "lower":
            value = _quantile(histogram, 0.90 if both_ends else 0.95)
        else:
            value = _quantile(histogram, 0.95 if both_ends else 0.05)
        if value is not None:
            values[number] = value
    return values


@dataclass
class Explained:
    cost: float | None  # None: not planned, `error` says why
    index_names: set[str] = field(default_factory=set)
    node_types: set[str] = field(default_factory=set)
    method: str = ""  # "representative parameters" / "generic plan"
    error: str | None = None


def _plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", ()):
        yield from _plan_nodes(child)


def explain(cursor, query: str, values: dict[int, str | None], *, server_version: int) -> Explained:
    """The planner's estimate for `query`: with the representative values for its parameters,
    or (PostgreSQL 16+, some parameter without one) its generic plan.

    In a savepoint, so that an error (a table dropped since the statement ran, a lock) does not
    end the caller's transaction; planning waits at most PLAN_LOCK_TIMEOUT for a table's lock,
    so a queued ALTER TABLE cannot hold the page."""
    numbers = parameter_numbers(parse(query))
    if not all(n in values for n in numbers) and server_version < 160000:
        return Explained(None, error="a parameter has no value in pg_stats, and PostgreSQL < 16 has no GENERIC_PLAN")
    prepared = False
    name = SAVEPOINT
    cursor.execute(f"SAVEPOINT {name}")
    try:
        cursor.execute(f"SET LOCAL lock_timeout = '{PLAN_LOCK_TIMEOUT}'")
        if not all(n in values for n in numbers):
            method = "generic plan"
            cursor.execute(f"EXPLAIN (GENERIC_PLAN, FORMAT JSON) {query}")
        elif numbers:
            method = "representative parameters"
            cursor.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            cursor.execute(f"PREPARE {name} AS {query}")
            prepared = True
            arguments = ", ".join(_literal(values.get(n)) for n in range(1, max(numbers) + 1))
            cursor.execute(f"EXPLAIN (FORMAT JSON) EXECUTE {name}({arguments})")
        else:
            method = "constants"
            cursor.execute(f"EXPLAIN (FORMAT JSON) {query}")
        document = cursor.fetchone()[0]
        error = None
    except (DatabaseError, PsycopgError) as exc:
        document, error = None, str(exc).splitlines()[0][:200]
    cursor.execute(f"ROLLBACK TO SAVEPOINT {name}")  # also undoes the SET LOCALs
    if prepared:  # a prepared statement outlives the rollback
        cursor.execute(f"DEALLOCATE {name}")
    cursor.execute(f"RELEASE SAVEPOINT {name}")
    if document is None:
        return Explained(None, error=error)
    plan = (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
    nodes = list(_plan_nodes(plan))
    return Explained(
        cost=float(plan["Total Cost"]),
        index_names={node["Index Name"] for node in nodes if "Index Name" in node},
        node_types={node["Node Type"] for node in nodes},
        method=method,
    )


# --- the advice ---------------------------------------------------------------------------------


@dataclass
class _Suggestion:
    info: TableInfo
    columns: list[str]
    kinds: set[str]
    statements: dict[int, dict]  # queryid -> statement row
    values: dict[int, dict[int, str | None]]  # queryid -> its representative parameters


def _statement_row(row: dict) -> dict:
    return {
        "queryid": row["queryid"],
        "query": row["query"],
        "calls": row["calls"],
        "total_exec_ms": row["total_exec_ms"],
        "mean_exec_ms": row["mean_exec_ms"],
    }


def collect_candidates(cursor, statements: list[dict], *, min_rows: float) -> list[_Suggestion]:
    """Candidates from the statements, per table of at least `min_rows` rows, minus those an
    existing index serves; a candidate that is the prefix of another on the same table is
    folded into it (one index serving both)."""
    trees = {row["queryid"]: parse(row["query"]) for row in statements}
    relations = set().union(*(relations_in(tree) for tree in trees.values() if tree is not None))
    catalog = table_catalog(cursor, relations)
    by_key: dict[tuple, _Suggestion] = {}
    for row in statements:
        parsed = analyze(trees[row["queryid"]], lambda r: catalog[r].columns if r in catalog else set())
        if parsed is None:
            continue
        values = representative_values(parsed, catalog)
        for use in parsed.tables.values():
            info = catalog.get(use.relation)
            if info is None or info.rows < min_rows:
                continue
            for candidate in candidates_for(use, has_limit=parsed.has_limit):
                if not all(c in info.columns for c in candidate.columns()):
                    continue
                if covered_by(candidate, info.index_keys) is not None:
                    continue
                columns = candidate.columns(info.distinct_values)
                suggestion = by_key.setdefault((info.oid, tuple(columns)), _Suggestion(info, columns, set(), {}, {}))
                suggestion.kinds.add(candidate.kind)
                suggestion.statements[row["queryid"]] = _statement_row(row)
                suggestion.values[row["queryid"]] = values
    suggestions = sorted(by_key.values(), key=lambda s: (s.info.oid, -len(s.columns), s.columns))
    kept: list[_Suggestion] = []
    for suggestion in suggestions:
        n = len(suggestion.columns)
        longer = next(
            (k for k in kept if k.info.oid == suggestion.info.oid and k.columns[:n] == suggestion.columns), None
        )
        if longer is None:
            kept.append(suggestion)
        else:
            longer.kinds |= suggestion.kinds
            longer.statements.update(suggestion.statements)
            longer.values.update(suggestion.values)
    return kept


def _index_name(info: TableInfo, columns: list[str]) -> str:
    return f"{info.name}_{'_'.join(columns)}_idx"[:63]


def _create_sql(info: TableInfo, columns: list[str], *, concurrently: bool) -> str:
    return "CREATE INDEX {}{} ON {}.{} ({})".format(
        "CONCURRENTLY " if concurrently else "",
        _quote_ident(_index_name(info, columns)),
        _quote_ident(info.schema),
        _quote_ident(info.name),
        ", ".join(_quote_ident(c) for c in columns),
    )


def _evidence(info: TableInfo, columns: list[str]) -> list[dict]:
    """pg_stats for each column: how many rows one value selects, how many are NULL, and how
    closely the heap follows the column's order (correlation near ±1: cheap range scans)."""
    result = []
    for column in columns:
        stat = info.stats.get(column) or {}
        distinct = info.distinct_values(column) or None
        null_frac = stat.get("null_frac")
        rows_per_value = info.rows * (1 - (null_frac or 0)) / distinct if distinct else None
        result.append(
            {
                "column": column,
                "n_distinct": stat.get("n_distinct"),
                "null_frac": null_frac,
                "correlation": stat.get("correlation"),
                "rows_per_value": round(rows_per_value, 1) if rows_per_value is not None else None,
                "analyzed": bool(stat),
            }
        )
    return result


def verify(cursor, suggestion: _Suggestion, *, server_version: int, use_hypopg: bool, baseline: dict) -> None:
    """EXPLAIN each statement the suggestion serves, today (cached in `baseline` per queryid) and,
    with HypoPG, with the index as a hypothetical one. Fills in each statement's costs."""
    for queryid, statement in suggestion.statements.items():
        if queryid not in baseline:  # today's plan: before any hypothetical index exists
            baseline[queryid] = explain(
                cursor, statement["query"], suggestion.values[queryid], server_version=server_version
            )
        before = baseline[queryid]
        statement["cost_now"] = before.cost
        statement["plan_method"] = before.method
        statement["plan_error"] = before.error
        statement["seq_scan_now"] = "Seq Scan" in before.node_types
    if not use_hypopg:
        return
    try:
        cursor.execute(
            "SELECT indexname FROM hypopg_create_index(%s)",
            [_create_sql(suggestion.info, suggestion.columns, concurrently=False)],
        )
        created = cursor.fetchone()[0]
        for queryid, statement in suggestion.statements.items():
            before = baseline[queryid]
            if before.cost is None:
                continue
            after = explain(cursor, statement["query"], suggestion.values[queryid], server_version=server_version)
            statement["cost_with_index"] = after.cost
            statement["uses_index"] = created in after.index_names
            if after.cost is not None and before.cost > 0:
                statement["cost_reduction"] = 1 - after.cost / before.cost
            statement["plan_error"] = after.error
    finally:
        cursor.execute("SELECT hypopg_reset()")


def advise(cursor, statements: list[dict], *, verify_candidates: bool = True, min_rows: float | None = None) -> dict:
    """The advice for `statements` (rows with queryid, query, calls, total_exec_ms, mean_exec_ms),
    on the database behind `cursor` (a Django cursor, or a psycopg one in a transaction)."""
    min_rows = settings.MONITORING_MISSING_INDEX_MIN_ROWS if min_rows is None else min_rows
    min_reduction = settings.MONITORING_ADVISOR_MIN_COST_REDUCTION
    cursor.execute("SELECT current_setting('server_version_num')::int, current_schema()")
    server_version, current_schema = cursor.fetchone()
    hypopg = extension_installed(cursor, "hypopg")
    cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'hypopg')")
    hypopg_available = cursor.fetchone()[0]
    suggestions, rejected, baseline = [], [], {}
    for candidate in collect_candidates(cursor, statements, min_rows=min_rows):
        if verify_candidates:
            verify(cursor, candidate, server_version=server_version, use_hypopg=hypopg, baseline=baseline)
        rows = sorted(candidate.statements.values(), key=lambda s: -s["total_exec_ms"])
        info = candidate.info
        traced = addition_code(info.name, candidate.columns) if info.schema == current_schema else None
        reductions = [s["cost_reduction"] for s in rows if s.get("uses_index") and s.get("cost_reduction") is not None]
        if not verify_candidates or not hypopg:
            status = "unverified"
        elif reductions and max(reductions) >= min_reduction:
            status = "verified"
        else:
            status = "rejected"
        item = {
            "schema": info.schema,
            "table": info.name,
            "table_display": info.display,
            "table_rows": int(info.rows),
            "columns": candidate.columns,
            "serves": sorted(candidate.kinds),
            "status": status,
            "cost_reduction": max(reductions) if reductions else None,
            "create_sql": _create_sql(info, candidate.columns, concurrently=True),
            "model": traced[0] if traced else None,
            "migration": traced[1] if traced else "",
            "evidence": _evidence(info, candidate.columns),
            "statements": rows,
            "total_exec_ms": sum(s["total_exec_ms"] for s in rows),
        }
        (rejected if status == "rejected" else suggestions).append(item)
    order = {"verified": 0, "unverified": 1}
    suggestions.sort(key=lambda s: (order[s["status"]], -s["total_exec_ms"]))
    return {
        "hypopg": hypopg,
        "hypopg_available": hypopg_available,
        "message": "" if hypopg else HYPOPG_HELP,
        "min_cost_reduction": min_reduction,
        "suggestions": suggestions,
        "rejected": rejected,
    }


def index_advice(*, verify_candidates: bool = True, limit: int | None = None) -> dict:
    """Index suggestions for this database's costliest statements in pg_stat_statements."""
    with catalog_cursor() as cursor:
        if not statements_available(cursor):
            from monitoring.selectors.statements import ENABLE_HELP

            return {
                "available": False,
                "message": ENABLE_HELP,
                "hypopg": False,
                "hypopg_available": False,
                "min_cost_reduction": settings.MONITORING_ADVISOR_MIN_COST_REDUCTION,
                "suggestions": [],
                "rejected": [],
            }
        statements = top_statements(
            cursor,
            limit=limit or settings.MONITORING_ADVISOR_STATEMENTS,
            min_calls=settings.MONITORING_ADVISOR_MIN_CALLS,
        )
        return {
            "available": True,
            "statements_considered": len(statements),
            **advise(cursor, statements, verify_candidates=verify_candidates),
        }


def suggestions_by_table(advice: dict) -> dict[str, list[dict]]:
    """{schema.table: its suggestions}: how the Index usage page names its tables."""
    result: dict[str, list[dict]] = {}
    for suggestion in advice["suggestions"]:
        result.setdefault(suggestion["table_display"], []).append(suggestion)
    return result
