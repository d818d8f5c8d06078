"""The cockpit's key figures, one dict computed from the selectors.

The minute sampler stores them (MetricSample) and caches them; the Prometheus collector and the
overview read the cache, so a scrape or a page view never runs the catalog reads itself unless
the cache is empty.
"""

import logging
import time

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from monitoring.selectors import backlog, connections, pool, reconciliation, system, tables
from project.db.replica import replication_lag

logger = logging.getLogger("opsdeck.monitoring")
FIGURES_CACHE_KEY = "monitoring:figures:v2"


def safe_source(name: str, func, errors: dict):
    try:
        return func()
    except Exception as exc:  # one failing source must not hide the others
        logger.warning("figure source failed", extra={"source": name, "error": repr(exc)})
        errors[name] = f"{type(exc).__name__}: {exc}"
        return None


def collect_figures() -> dict:
    started = time.perf_counter()
    errors: dict[str, str] = {}
    figures = {
        "taken_at": timezone.now().isoformat(),
        "cache_hit": safe_source("cache_hit", tables.cache_hit, errors),
        "connections": safe_source("connections", lambda: connections.connections(limit=5), errors),
        "pools": safe_source("pools", pool.application_pools, errors),
        "queues": safe_source("queues", backlog.queue_depths, errors),
        "approvals": safe_source("approvals", backlog.approvals_pending, errors),
        "reconciliation": safe_source("reconciliation", reconciliation.reconciliation_backlog, errors),
        "partitions": safe_source("partitions", tables.partitions, errors),
        "materialized_views": safe_source("materialized_views", tables.materialized_views, errors),
        "tables": safe_source("tables", tables.tables, errors),
        "node": safe_source("node", system.node, errors),
        "database": safe_source("database", system.database, errors),
        "replica": safe_source("replica", replication_lag, errors),
    }
    figures["errors"] = errors
    figures["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
    cache.set(FIGURES_CACHE_KEY, figures, settings.MONITORING_METRICS_CACHE_S)
    return figures


def cached_figures() -> dict:
    """The figures of the last minute (computed now if nobody did in the last MONITORING_METRICS_CACHE_S)."""
    figures = cache.get(FIGURES_CACHE_KEY)
    return figures if figures is not None else collect_figures()
