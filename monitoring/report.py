"""The overview: status of each service, key figures against their thresholds, and the full
report's recommendations (category, severity, message, action; the rules are in
monitoring/recommendations.py), as the platform guide (003) shapes them."""

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
            _status_max(p95, settings.MONITORING_P95_QUERY_MS_MAX, settings.MONITORING_P95_QUERY_MS_RED),
            f"< {settings.MONITORING_P95_QUERY_MS_MAX} ms (alert > {settings.MONITORING_P95_QUERY_MS_RED} ms)",
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


def recommendations(figures: dict, **sources) -> list[Recommendation]:
    """The report's findings: the table of rules in monitoring/recommendations.py."""
    from monitoring.recommendations import recommendations as run_rules

    return run_rules(figures, **sources)


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
