"""The overview: status of each service, key figures against their thresholds, and the full
report's recommendations (category, severity, message, action), as the platform guide (003)
shapes them."""

from dataclasses import asdict, dataclass

from django.conf import settings
from django.core.cache import cache

from monitoring.figures import cached_figures

GREEN, AMBER, RED, UNKNOWN = "green", "amber", "red", "unknown"
REPORT_CACHE_KEY = "monitoring:full-report:v2"


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    value: float | None
    display: str
    status: str
    threshold: str
    source: str


@dataclass(frozen=True)
class Recommendation:
    category: str
    severity: str  # critical, warning, info, success
    message: str
    action: str


def _pct(value) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _status_max(value, amber, red=None) -> str:
    """Green below amber, amber up to red (or above amber if no red), red above red."""
    if value is None:
        return UNKNOWN
    if red is not None and value > red:
        return RED
    if value >= amber:
        return AMBER if red is not None else RED
    return GREEN


def service_status() -> dict:
    from project import health

    def check_database():
        # Not health.check_database: that one hands its (thread's) connection back to the pool,
        # and this runs on the request's own connection.
        from monitoring.selectors.base import query

        query("SELECT 1")

    statuses = {}
    for name, check in (("database", check_database), ("redis", health.check_redis), ("broker", health.check_broker)):
        try:
            check()
            statuses[name] = {"ok": True, "detail": "answers"}
        except Exception as exc:
            statuses[name] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"[:200]}
    from monitoring.selectors.backlog import celery_inspect_cached

    inspect = celery_inspect_cached()
    if inspect is None:
        statuses["workers"] = {"ok": None, "detail": "not inspected yet (monitoring.inspect_workers runs every minute)"}
    else:
        alive = [name for name, worker in inspect["workers"].items() if worker["ok"]]
        statuses["workers"] = {
            "ok": bool(alive),
            "detail": f"{len(alive)} answering as of {inspect['taken_at'][:19]}Z" if alive else "no worker answered",
        }
    return statuses


def latest_sample(name: str) -> float | None:
    from monitoring.models import MetricSample

    sample = (
        MetricSample.objects.filter(name=name, key="").order_by("-taken_at").values_list("value", flat=True).first()
    )
    return sample


def key_figures(figures: dict) -> list[Figure]:
    pools = figures.get("pools") or {}
    pool_use = (pools.get("totals") or {}).get("max_usage_ratio") if pools.get("available") else None
    cache_hit = figures.get("cache_hit") or {}
    approvals = figures.get("approvals") or {}
    queues = figures.get("queues") or {}
    depth = max((q["depth"] for q in queues.get("queues", [])), default=None) if queues.get("available") else None
    p95 = latest_sample("db.query_p95_ms")
    error_rate = latest_sample("http.error_rate")
    hit_min = settings.MONITORING_CACHE_HIT_MIN

    def hit_status(value):
        return UNKNOWN if value is None else (GREEN if value >= hit_min else RED)

    pending = approvals.get("count")
    return [
        Figure(
            "pool_usage",
            "DB pool use (busiest process)",
            pool_use,
            _pct(pool_use),
            _status_max(pool_use, settings.MONITORING_POOL_USAGE_MAX),
            f"< {settings.MONITORING_POOL_USAGE_MAX:.0%}",
            "guide 001: database pool < 80% utilization",
        ),
        Figure(
            "cache_hit_table",
            "Cache hit (tables)",
            cache_hit.get("table"),
            _pct(cache_hit.get("table")),
            hit_status(cache_hit.get("table")),
            f">= {hit_min:.0%}",
            "PgHero: cache hit rate >= 99%",
        ),
        Figure(
            "cache_hit_index",
            "Cache hit (indexes)",
            cache_hit.get("index"),
            _pct(cache_hit.get("index")),
            hit_status(cache_hit.get("index")),
            f">= {hit_min:.0%}",
            "PgHero: cache hit rate >= 99%",
        ),
        Figure(
            "query_p95_ms",
            "p95 query time (last minute)",
            p95,
            "—" if p95 is None else f"{p95:.1f} ms",
            _status_max(p95, settings.MONITORING_P95_QUERY_MS_MAX, 500),
            f"< {settings.MONITORING_P95_QUERY_MS_MAX} ms (alert > 500 ms)",
            "guide 000: query_time p95 < 100 ms",
        ),
        Figure(
            "pending_backlog",
            "Pending approvals",
            pending,
            "—" if pending is None else str(pending),
            _status_max(pending, settings.MONITORING_PENDING_AMBER, settings.MONITORING_PENDING_RED),
            f"< {settings.MONITORING_PENDING_AMBER} (red > {settings.MONITORING_PENDING_RED})",
            "guide 000: pending_backlog < 20, alert > 50",
        ),
        Figure(
            "queue_depth",
            "Deepest Celery queue",
            depth,
            "—" if depth is None else str(depth),
            _status_max(depth, settings.MONITORING_QUEUE_DEPTH_MAX),
            f"< {settings.MONITORING_QUEUE_DEPTH_MAX}",
            "guide 001: queue depth < 1000",
        ),
        Figure(
            "error_rate",
            "HTTP error rate (5xx, last minute)",
            error_rate,
            _pct(error_rate),
            _status_max(error_rate, settings.MONITORING_ERROR_RATE_MAX),
            f"< {settings.MONITORING_ERROR_RATE_MAX:.0%}",
            "guide 001: error rate < 1%",
        ),
    ]


def recommendations(
    figures: dict,
    *,
    indexes: dict | None = None,
    statements: dict | None = None,
    sequences: list | None = None,
    wraparound: dict | None = None,
) -> list[Recommendation]:
    found: list[Recommendation] = []
    add = found.append
    for figure in key_figures(figures):
        if figure.status in (AMBER, RED):
            add(
                Recommendation(
                    "thresholds",
                    "critical" if figure.status == RED else "warning",
                    f"{figure.label} is {figure.display} (target {figure.threshold}).",
                    _FIGURE_ACTIONS[figure.key],
                )
            )
    if indexes is not None:
        by_flag = {
            flag: [row for row in indexes["indexes"] if flag in row["flags"]]
            for flag in ("unused", "duplicate", "invalid")
        }
        if by_flag["invalid"]:
            add(
                Recommendation(
                    "indexes",
                    "critical",
                    f"{len(by_flag['invalid'])} invalid index(es): "
                    + ", ".join(row["name"] for row in by_flag["invalid"][:5]),
                    "Drop and rebuild them (Index usage page: drop invalid index, then the migration shown).",
                )
            )
        if by_flag["duplicate"]:
            size = sum(row["size_bytes"] or 0 for row in by_flag["duplicate"])
            add(
                Recommendation(
                    "indexes",
                    "warning",
                    f"{len(by_flag['duplicate'])} redundant index(es), "
                    f"{size / 1048576:.1f} MB: " + ", ".join(row["name"] for row in by_flag["duplicate"][:5]),
                    "Remove them with the RemoveIndexConcurrently migration shown on the Index usage page.",
                )
            )
        if by_flag["unused"]:
            size = sum(row["size_bytes"] or 0 for row in by_flag["unused"])
            add(
                Recommendation(
                    "indexes",
                    "warning",
                    f"{len(by_flag['unused'])} unused index(es), {size / 1048576:.1f} MB, "
                    f"no scans since {indexes['stats_since']:%Y-%m-%d}: "
                    + ", ".join(row["name"] for row in by_flag["unused"][:5]),
                    "Check they are not needed on a replica, then remove them (migration on the Index usage page).",
                )
            )
        if indexes["missing_index_tables"]:
            add(
                Recommendation(
                    "indexes",
                    "warning",
                    "Tables read mostly by sequential scans: "
                    + ", ".join(row["name"] for row in indexes["missing_index_tables"][:5]),
                    "Find their heavy statements on the Queries page and EXPLAIN them; add the index they need.",
                )
            )
    for table in figures.get("tables") or []:
        if (table["dead_ratio"] or 0) > 0.2 and (table["dead_rows"] or 0) > 10_000:
            add(
                Recommendation(
                    "vacuum",
                    "warning",
                    f"{table['name']}: {table['dead_ratio']:.0%} dead rows ({table['dead_rows']:,})",
                    "VACUUM (ANALYZE) it (Tables page); check autovacuum settings.",
                )
            )
    for table in figures.get("partitions") or []:
        if table["status"] == RED:
            add(
                Recommendation(
                    "partitions",
                    "critical",
                    f"{table['name']}: {table['months_ahead']} month(s) of partitions "
                    f"ahead, {table['default_rows']:,} row(s) in the default partition",
                    "Create the missing partitions (Tables page) and move default rows into them.",
                )
            )
        elif table["status"] == AMBER:
            add(
                Recommendation(
                    "partitions",
                    "warning",
                    f"{table['name']}: only {table['months_ahead']} month(s) ahead",
                    "Create partitions now (Tables page); check that project.maintain_partitions runs.",
                )
            )
    for view in figures.get("materialized_views") or []:
        if view.get("populated") is False and not view.get("registered"):
            add(
                Recommendation(
                    "materialized_views",
                    "warning",
                    f"{view['name']} is not populated (reading it fails) and no refresh schedule knows it",
                    "REFRESH MATERIALIZED VIEW it, and register it with project.matviews so it is refreshed "
                    "on a schedule, or drop it if nothing reads it.",
                )
            )
        elif view.get("registered") and view.get("stale"):
            add(
                Recommendation(
                    "materialized_views",
                    "warning",
                    f"{view['name']} is stale (last refresh {view.get('last_refreshed_at') or 'never'})",
                    "Refresh it now (Tables page).",
                )
            )
    conns = figures.get("connections")
    if conns:
        if conns["usage_ratio"] is not None and conns["usage_ratio"] > 0.8:
            add(
                Recommendation(
                    "connections",
                    "warning",
                    f"{conns['client_connections']} of {conns['max_connections']} connections in use",
                    "Lower pool sizes or processes, or put PgBouncer in front.",
                )
            )
        long_running = [q for q in conns["longest_queries"] if q["long_running"]]
        if long_running:
            add(
                Recommendation(
                    "connections",
                    "warning",
                    f"{len(long_running)} query(ies) running longer than {conns['long_query_threshold_s']} s",
                    "Look at them on the Pool page; cancel if stuck.",
                )
            )
        if conns["idle_in_transaction"]:
            add(
                Recommendation(
                    "connections",
                    "warning",
                    f"{len(conns['idle_in_transaction'])} session(s) idle in transaction",
                    "They hold locks and block vacuum: find the code (application name), terminate if stuck.",
                )
            )
    recon = figures.get("reconciliation")
    if recon and recon["executions"]["stuck"]["count"]:
        add(
            Recommendation(
                "reconciliation",
                "critical",
                f"{recon['executions']['stuck']['count']} execution(s) stuck",
                "See the Pending backlog page; the stuck sweeper re-queues them.",
            )
        )
    if recon and recon["webhook_deliveries"]["dead"]["count"]:
        add(
            Recommendation(
                "webhooks",
                "warning",
                f"≈{recon['webhook_deliveries']['dead']['count']} dead webhook deliveries",
                "Check the endpoints; redeliver from the reconciliation admin.",
            )
        )
    if statements is not None:
        if not statements["available"]:
            add(Recommendation("queries", "info", "pg_stat_statements is not enabled", statements["message"]))
        else:
            slow = [s for s in statements["statements"] if s["slow"]]
            if slow:
                add(
                    Recommendation(
                        "queries",
                        "warning",
                        f"{len(slow)} slow statement(s) (mean >= {settings.MONITORING_SLOW_QUERY_MEAN_MS} ms, "
                        f">= {settings.MONITORING_SLOW_QUERY_MIN_CALLS} calls)",
                        "EXPLAIN them on the Queries page.",
                    )
                )
    for sequence in (sequences or [])[:5]:
        if sequence["near_overflow"]:
            add(
                Recommendation(
                    "sequences",
                    "critical",
                    f"{sequence['name']} has used {sequence['used_ratio']:.0%} "
                    f"of its range ({sequence['column_type'] or 'sequence'})",
                    "Move the column to bigint.",
                )
            )
    if wraparound and wraparound["status"] == "red":
        add(
            Recommendation(
                "wraparound",
                "critical",
                f"Transaction ids {wraparound['used_ratio']:.0%} of the way to wraparound",
                "VACUUM (FREEZE) the oldest tables (System page) and check autovacuum keeps up.",
            )
        )
    if not found:
        add(Recommendation("general", "success", "All metrics look good!", "Continue monitoring"))
    order = {"critical": 0, "warning": 1, "info": 2, "success": 3}
    return sorted(found, key=lambda r: order[r.severity])


_FIGURE_ACTIONS = {
    "pool_usage": "See the Pool page: raise DB_POOL_MAX_SIZE or add processes, or find who holds connections.",
    "cache_hit_table": "The working set outgrew shared_buffers: raise it, or find the statements reading most.",
    "cache_hit_index": "Indexes no longer fit in memory: drop unused ones, raise shared_buffers.",
    "query_p95_ms": "See the Queries page for the statements whose time grew in the last hour.",
    "pending_backlog": "Check the automation runs (Pending backlog page) and the active rule.",
    "queue_depth": "Workers do not keep up: see the Pending backlog page, add workers for that queue.",
    "error_rate": "Look at the 5xx responses by view (django_http_responses_total_by_status_view_method).",
}


def full_report(*, refresh: bool = False) -> dict:
    """Everything, with recommendations: what the overview shows and GET .../full-report returns.

    The minute sampler refreshes it (refresh=True, right after the figures); readers get that
    copy, or compute one if the sampler has not run in the last MONITORING_METRICS_CACHE_S.
    """
    cached = None if refresh else cache.get(REPORT_CACHE_KEY)
    if cached is not None:
        return cached
    from monitoring.figures import safe_source
    from monitoring.selectors import indexes, statements, system

    figures = cached_figures()
    errors = dict(figures.get("errors") or {})
    # Each source on its own: a lock or timeout on one leaves the others' findings in the report.
    index_usage = safe_source("indexes", lambda: indexes.index_usage(with_bloat=False), errors)
    slow = safe_source("statements", lambda: statements.slow_queries(order="total", limit=50), errors)
    sequences = safe_source("sequences", system.sequences, errors)
    wraparound = safe_source("wraparound", system.wraparound, errors)
    figures = {**figures, "errors": errors}
    report = {
        "timestamp": figures["taken_at"],
        "services": service_status(),
        "figures": [asdict(figure) for figure in key_figures(figures)],
        "data": figures,
        "recommendations": [
            asdict(r)
            for r in recommendations(
                figures, indexes=index_usage, statements=slow, sequences=sequences, wraparound=wraparound
            )
        ],
    }
    cache.set(REPORT_CACHE_KEY, report, settings.MONITORING_METRICS_CACHE_S)
    return report
