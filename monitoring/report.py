"""The overview: status of each service, key figures against their thresholds, and the full
report's recommendations (category, severity, message, action; the rules are in
monitoring/recommendations.py), as the platform guide (003) shapes them."""

from dataclasses import asdict

from django.conf import settings
from django.core.cache import cache

from monitoring.figures import cached_figures
from monitoring.key_figures import (  # noqa: F401  (the report's names: report.Figure, report.key_figures...)
    AMBER,
    GREEN,
    RED,
    UNKNOWN,
    Figure,
    Recommendation,
    _status_max,
    key_figures,
    latest_sample,
)

REPORT_CACHE_KEY = "monitoring:full-report:v2"


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
