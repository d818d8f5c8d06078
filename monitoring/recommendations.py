"""The full report's recommendations: a table of rules, each citing where its threshold comes from
and which setting holds it (docs/monitoring.md, "Thresholds and where they come from").

A rule reads the report's inputs and returns its findings (none when all is well). Sources:
- guide 000 / 001: the approvals and performance reference guides (/work/shared/reference/seeds);
- PgHero: the thresholds of PgHero's checks, which the cockpit mirrors;
- PostgreSQL docs: the chapter named beside the rule.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.conf import settings

from monitoring.key_figures import AMBER, RED, Recommendation, key_figures

MB = 1048576
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2, "success": 3}


@dataclass(frozen=True)
class Inputs:
    figures: dict
    indexes: dict | None = None
    statements: dict | None = None
    sequences: list | None = None
    wraparound: dict | None = None


@dataclass(frozen=True)
class Rule:
    name: str
    source: str
    # The settings holding the rule's thresholds; () when the finding has no threshold (an invalid
    # index is one at any count).
    threshold_settings: tuple[str, ...]
    find: Callable[[Inputs], Iterable[Recommendation]]


_FIGURE_ACTIONS = {
    "pool_usage": "See the Pool page: raise DB_POOL_MAX_SIZE or add processes, or find who holds connections.",
    "cache_hit_table": "The working set outgrew shared_buffers: raise it, or find the statements reading most.",
    "cache_hit_index": "Indexes no longer fit in memory: drop unused ones, raise shared_buffers.",
    "query_p95_ms": "See the Queries page for the statements whose time grew in the last hour.",
    "pending_backlog": "Check the automation runs (Pending backlog page) and the active rule.",
    "queue_depth": "Workers do not keep up: see the Pending backlog page, add workers for that queue.",
    "error_rate": "Look at the 5xx responses by view (django_http_responses_total_by_status_view_method).",
}


def _figure_rule(key: str) -> Callable[[Inputs], list[Recommendation]]:
    """A key figure past its amber or red threshold (the Overview's coloured figure)."""

    def find(inputs: Inputs) -> list[Recommendation]:
        return [
            Recommendation(
                "thresholds",
                "critical" if figure.status == RED else "warning",
                f"{figure.label} is {figure.display} (target {figure.threshold}).",
                _FIGURE_ACTIONS[figure.key],
            )
            for figure in key_figures(inputs.figures)
            if figure.key == key and figure.status in (AMBER, RED)
        ]

    return find


def _names(rows: list[dict]) -> str:
    return ", ".join(row["name"] for row in rows[:5])


def _flagged(inputs: Inputs, flag: str) -> list[dict]:
    return [row for row in (inputs.indexes or {}).get("indexes", []) if flag in row["flags"]]


def invalid_indexes(inputs: Inputs) -> list[Recommendation]:
    if rows := _flagged(inputs, "invalid"):
        message = f"{len(rows)} invalid index(es): {_names(rows)}"
        action = "Drop and rebuild them (Index usage page: drop invalid index, then the migration shown)."
        return [Recommendation("indexes", "critical", message, action)]
    return []


def duplicate_indexes(inputs: Inputs) -> list[Recommendation]:
    if rows := _flagged(inputs, "duplicate"):
        size = sum(row["size_bytes"] or 0 for row in rows)
        message = f"{len(rows)} redundant index(es), {size / MB:.1f} MB: {_names(rows)}"
        action = "Remove them with the RemoveIndexConcurrently migration shown on the Index usage page."
        return [Recommendation("indexes", "warning", message, action)]
    return []


def unused_indexes(inputs: Inputs) -> list[Recommendation]:
    if rows := _flagged(inputs, "unused"):
        size = sum(row["size_bytes"] or 0 for row in rows)
        since = f"{inputs.indexes['stats_since']:%Y-%m-%d}"
        message = f"{len(rows)} unused index(es), {size / MB:.1f} MB, no scans since {since}: {_names(rows)}"
        action = "Check they are not needed on a replica, then remove them (migration on the Index usage page)."
        return [Recommendation("indexes", "warning", message, action)]
    return []


def tables_missing_an_index(inputs: Inputs) -> list[Recommendation]:
    if inputs.indexes is not None and (rows := inputs.indexes["missing_index_tables"]):
        action = "Find their heavy statements on the Queries page and EXPLAIN them; add the index they need."
        return [Recommendation("indexes", "warning", f"Tables read mostly by sequential scans: {_names(rows)}", action)]
    return []


def dead_rows(inputs: Inputs) -> list[Recommendation]:
    return [
        Recommendation(
            "vacuum",
            "warning",
            f"{table['name']}: {table['dead_ratio']:.0%} dead rows ({table['dead_rows']:,})",
            "VACUUM (ANALYZE) it (Tables page); check autovacuum settings.",
        )
        for table in inputs.figures.get("tables") or []
        if (table["dead_ratio"] or 0) > settings.MONITORING_DEAD_ROWS_RATIO_MAX
        and (table["dead_rows"] or 0) > settings.MONITORING_DEAD_ROWS_MIN
    ]


def partitions_ahead(inputs: Inputs) -> list[Recommendation]:
    found = []
    for table in inputs.figures.get("partitions") or []:
        if table["status"] == RED:
            message = (
                f"{table['name']}: {table['months_ahead']} month(s) of partitions "
                f"ahead, {table['default_rows']:,} row(s) in the default partition"
            )
            action = "Create the missing partitions (Tables page) and move default rows into them."
            found.append(Recommendation("partitions", "critical", message, action))
        elif table["status"] == AMBER:
            message = f"{table['name']}: only {table['months_ahead']} month(s) ahead"
            action = "Create partitions now (Tables page); check that project.maintain_partitions runs."
            found.append(Recommendation("partitions", "warning", message, action))
    return found


def materialized_views(inputs: Inputs) -> list[Recommendation]:
    found = []
    for view in inputs.figures.get("materialized_views") or []:
        if view.get("populated") is False and not view.get("registered"):
            message = f"{view['name']} is not populated (reading it fails) and no refresh schedule knows it"
            action = (
                "REFRESH MATERIALIZED VIEW it, and register it with project.matviews so it is refreshed "
                "on a schedule, or drop it if nothing reads it."
            )
            found.append(Recommendation("materialized_views", "warning", message, action))
        elif view.get("registered") and view.get("stale"):
            message = f"{view['name']} is stale (last refresh {view.get('last_refreshed_at') or 'never'})"
            found.append(Recommendation("materialized_views", "warning", message, "Refresh it now (Tables page)."))
    return found


def connections_in_use(inputs: Inputs) -> list[Recommendation]:
    conns = inputs.figures.get("connections")
    if conns and conns["usage_ratio"] is not None and conns["usage_ratio"] > settings.MONITORING_CONNECTIONS_USAGE_MAX:
        message = f"{conns['client_connections']} of {conns['max_connections']} connections in use"
        action = "Lower pool sizes or processes, or put PgBouncer in front."
        return [Recommendation("connections", "warning", message, action)]
    return []


def long_running_queries(inputs: Inputs) -> list[Recommendation]:
    conns = inputs.figures.get("connections")
    if conns and (long_running := [q for q in conns["longest_queries"] if q["long_running"]]):
        message = f"{len(long_running)} query(ies) running longer than {conns['long_query_threshold_s']} s"
        return [Recommendation("connections", "warning", message, "Look at them on the Pool page; cancel if stuck.")]
    return []


def idle_in_transaction(inputs: Inputs) -> list[Recommendation]:
    conns = inputs.figures.get("connections")
    if conns and conns["idle_in_transaction"]:
        message = f"{len(conns['idle_in_transaction'])} session(s) idle in transaction"
        action = "They hold locks and block vacuum: find the code (application name), terminate if stuck."
        return [Recommendation("connections", "warning", message, action)]
    return []


def stuck_executions(inputs: Inputs) -> list[Recommendation]:
    recon = inputs.figures.get("reconciliation")
    if recon and (count := recon["executions"]["stuck"]["count"]):
        action = "See the Pending backlog page; the stuck sweeper re-queues them."
        return [Recommendation("reconciliation", "critical", f"{count} execution(s) stuck", action)]
    return []


def dead_webhook_deliveries(inputs: Inputs) -> list[Recommendation]:
    recon = inputs.figures.get("reconciliation")
    if recon and (count := recon["webhook_deliveries"]["dead"]["count"]):
        action = "Check the endpoints; redeliver from the reconciliation admin."
        return [Recommendation("webhooks", "warning", f"≈{count} dead webhook deliveries", action)]
    return []


def statement_statistics_missing(inputs: Inputs) -> list[Recommendation]:
    if inputs.statements is not None and not inputs.statements["available"]:
        return [Recommendation("queries", "info", "pg_stat_statements is not enabled", inputs.statements["message"])]
    return []


def slow_statements(inputs: Inputs) -> list[Recommendation]:
    if inputs.statements is None or not inputs.statements["available"]:
        return []
    if slow := [s for s in inputs.statements["statements"] if s["slow"]]:
        message = (
            f"{len(slow)} slow statement(s) (mean >= {settings.MONITORING_SLOW_QUERY_MEAN_MS} ms, "
            f">= {settings.MONITORING_SLOW_QUERY_MIN_CALLS} calls)"
        )
        return [Recommendation("queries", "warning", message, "EXPLAIN them on the Queries page.")]
    return []


def sequences_near_overflow(inputs: Inputs) -> list[Recommendation]:
    return [
        Recommendation(
            "sequences",
            "critical",
            f"{sequence['name']} has used {sequence['used_ratio']:.0%} "
            f"of its range ({sequence['column_type'] or 'sequence'})",
            "Move the column to bigint.",
        )
        for sequence in (inputs.sequences or [])[:5]
        if sequence["near_overflow"]
    ]


def transaction_id_wraparound(inputs: Inputs) -> list[Recommendation]:
    if inputs.wraparound and inputs.wraparound["status"] == RED:
        message = f"Transaction ids {inputs.wraparound['used_ratio']:.0%} of the way to wraparound"
        action = "VACUUM (FREEZE) the oldest tables (System page) and check autovacuum keeps up."
        return [Recommendation("wraparound", "critical", message, action)]
    return []


PG_VACUUM = "PostgreSQL docs, Routine Vacuuming (25.1)"
RULES = (
    Rule("pool_usage", "guide 001: Database Pool < 80% utilization", ("MONITORING_POOL_USAGE_MAX",),
         _figure_rule("pool_usage")),
    Rule("cache_hit_table", "PgHero: cache hit rate >= 99%", ("MONITORING_CACHE_HIT_MIN",),
         _figure_rule("cache_hit_table")),
    Rule("cache_hit_index", "PgHero: cache hit rate >= 99%", ("MONITORING_CACHE_HIT_MIN",),
         _figure_rule("cache_hit_index")),
    Rule("query_p95_ms", "guide 000: query_time p95 < 100 ms, alert > 500 ms",
         ("MONITORING_P95_QUERY_MS_MAX", "MONITORING_P95_QUERY_MS_RED"), _figure_rule("query_p95_ms")),
    Rule("pending_backlog", "guide 000: pending_backlog < 20, alert > 50",
         ("MONITORING_PENDING_AMBER", "MONITORING_PENDING_RED"), _figure_rule("pending_backlog")),
    Rule("queue_depth", "guide 001: Queue Depth < 1000", ("MONITORING_QUEUE_DEPTH_MAX",),
         _figure_rule("queue_depth")),
    Rule("error_rate", "guide 001: Error Rate < 1%", ("MONITORING_ERROR_RATE_MAX",), _figure_rule("error_rate")),
    Rule("invalid_indexes", "PostgreSQL docs, CREATE INDEX: a failed CONCURRENTLY build leaves an INVALID index",
         (), invalid_indexes),
    Rule("duplicate_indexes", "PgHero: duplicate indexes", (), duplicate_indexes),
    Rule("unused_indexes", "PgHero: unused indexes", ("MONITORING_UNUSED_INDEX_MIN_BYTES",), unused_indexes),
    Rule("tables_missing_an_index", "PgHero: tables with mostly sequential scans",
         ("MONITORING_MISSING_INDEX_MIN_ROWS",), tables_missing_an_index),
    Rule("dead_rows", PG_VACUUM, ("MONITORING_DEAD_ROWS_RATIO_MAX", "MONITORING_DEAD_ROWS_MIN"), dead_rows),
    Rule("partitions_ahead", "issue 5: partitions created months ahead, none into the default partition",
         ("MONITORING_PARTITION_MONTHS_AMBER",), partitions_ahead),
    Rule("materialized_views", "project.matviews: stale after STALE_AFTER_PERIODS refresh periods", (),
         materialized_views),
    Rule("connections_in_use", "guide 001: < 80% utilization; PostgreSQL docs, max_connections (20.3)",
         ("MONITORING_CONNECTIONS_USAGE_MAX",), connections_in_use),
    Rule("long_running_queries", "PgHero: long-running queries", ("MONITORING_LONG_QUERY_S",), long_running_queries),
    Rule("idle_in_transaction", "PostgreSQL docs, idle_in_transaction_session_timeout (20.11)", (),
         idle_in_transaction),
    Rule("stuck_executions", "the reconciliation sweeper's definition of stuck", ("RECONCILIATION_STUCK_AFTER_S",),
         stuck_executions),
    Rule("dead_webhook_deliveries", "docs/webhooks.md: dead after WEBHOOK_MAX_ATTEMPTS", ("WEBHOOK_MAX_ATTEMPTS",),
         dead_webhook_deliveries),
    Rule("statement_statistics_missing", "PostgreSQL docs, pg_stat_statements (F.32)", (),
         statement_statistics_missing),
    Rule("slow_statements", "PgHero: slow queries",
         ("MONITORING_SLOW_QUERY_MEAN_MS", "MONITORING_SLOW_QUERY_MIN_CALLS"), slow_statements),
    Rule("sequences_near_overflow", "PgHero: sequences near their column's maximum",
         ("MONITORING_SEQUENCE_USED_MAX",), sequences_near_overflow),
    Rule("transaction_id_wraparound", f"{PG_VACUUM}.5: Preventing Transaction ID Wraparound Failures", (),
         transaction_id_wraparound),
)  # fmt: skip


def recommendations(
    figures: dict,
    *,
    indexes: dict | None = None,
    statements: dict | None = None,
    sequences: list | None = None,
    wraparound: dict | None = None,
) -> list[Recommendation]:
    """Every rule's findings, most severe first; one "all good" when no rule found anything."""
    inputs = Inputs(figures, indexes, statements, sequences, wraparound)
    found = [finding for rule in RULES for finding in rule.find(inputs)]
    if not found:
        found.append(Recommendation("general", "success", "All metrics look good!", "Continue monitoring"))
    return sorted(found, key=lambda finding: SEVERITY_ORDER[finding.severity])
