"""Key figures against their thresholds (the overview's cards, the report's figures) and the
shapes both the report and its recommendation rules use: report.py and recommendations.py each
read this module, so neither imports the other back."""

from dataclasses import dataclass

from django.conf import settings

GREEN, AMBER, RED, UNKNOWN = "green", "amber", "red", "unknown"


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
