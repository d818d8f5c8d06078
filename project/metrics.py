"""What /metrics exposes: the process's (or, in multiprocess mode, every process's) recorded
metrics plus collectors that compute their figures at scrape time.

Apps add scrape-time collectors (pool stats from Redis, queue depths, catalog figures) in their
AppConfig.ready():

    from project.metrics import register_metrics_collector
    register_metrics_collector(MyCollector())   # an object with collect() yielding metric families

They are exposed by web's /metrics only (not by the worker's WORKER_METRICS_PORT endpoint), so a
figure that is the same for every process is scraped once, not once per process.
"""

import os

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

_collectors: list = []


def register_metrics_collector(collector) -> None:
    """Add a scrape-time collector to web's /metrics (idempotent for the same object)."""
    if collector not in _collectors:
        _collectors.append(collector)


def registered_metrics_collectors() -> list:
    return list(_collectors)


class _ProcessRegistry:
    """The global registry's metrics (this process's own), as one collector."""

    def collect(self):
        return REGISTRY.collect()


def metrics_registry() -> CollectorRegistry:
    """A registry for one scrape. With PROMETHEUS_MULTIPROC_DIR set, counters and histograms come
    from every process's files (web and workers on one host); otherwise from this process."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ProcessRegistry())
    for collector in _collectors:
        registry.register(collector)
    return registry


def render_metrics() -> bytes:
    return generate_latest(metrics_registry())
