"""Application-side connection pool stats of every Opsdeck process, shared through Redis.

Pools are per process (Django's native psycopg pool), so no single process can see them all: each
web, worker and beat process publishes its own pool's stats to Redis every POOL_STATS_INTERVAL_S
(10 s) under `<POOL_STATS_KEY_PREFIX>:<hostname>:<pid>` with a POOL_STATS_TTL_S (30 s) expiry, and
readers (`live_pool_stats()`, the /metrics collector, the monitoring pages) list the live keys. A
process that dies simply stops refreshing its key, which then expires.

Who starts the publisher (a daemon thread, one per process):
- web: project/wsgi.py, imported by each gunicorn worker (and by runserver);
- worker: Celery's worker_process_init (each prefork child, or the solo pool's process);
- beat: Celery's beat_init.
A fork of a process that runs a publisher (gunicorn --preload, say) starts its own in the child.

Stats come from psycopg_pool's `get_stats()` (counters are cumulative since the pool was created):
  size             pool_size         connections the pool holds now (in use + idle)
  available        pool_available    idle connections ready to hand out
  waiting          requests_waiting  clients waiting for a connection right now
  requests         requests_num      connections requested so far
  requests_waiting requests_queued   requests so far that had to wait (none was idle)
  timeouts         requests_errors   requests so far that failed (PoolTimeout, too many waiting)
  max_size         pool_max
  usage_ratio      (size - available) / max_size: share of the pool's capacity in use
  open             False until the process's first query opens the pool (size and available 0)
"""

import atexit
import json
import logging
import os
import socket
import threading

from django.conf import settings
from django.db import connections
from django.utils import timezone

logger = logging.getLogger("opsdeck.poolstats")
POOL_ALIAS = "default"
_publisher_lock = threading.Lock()
_publisher: dict = {"pid": None, "thread": None, "stop": None}


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _key(process: str | None = None) -> str:
    return f"{settings.POOL_STATS_KEY_PREFIX}:{process or process_name()}"


def _redis():
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def current_pool_stats(alias: str = POOL_ALIAS) -> dict | None:
    """This process's pool stats in the published shape, or None if `alias` has no pool."""
    pool = connections[alias].pool  # created (not opened) on first access; opening is lazy
    if pool is None:
        return None
    raw = pool.get_stats()
    size, available, max_size = raw.get("pool_size", 0), raw.get("pool_available", 0), raw.get("pool_max", 0)
    if pool.closed:
        # Not opened yet (Django opens it on the first query) or closed: psycopg_pool reports
        # min_size as its size from construction on, which would read as connections in use.
        size = available = 0
    return {
        "process": process_name(),
        "role": settings.OPSDECK_ROLE,
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "alias": alias,
        "open": not pool.closed,
        "size": size,
        "available": available,
        "waiting": raw.get("requests_waiting", 0),
        "requests": raw.get("requests_num", 0),
        "requests_waiting": raw.get("requests_queued", 0),
        "requests_wait_ms": raw.get("requests_wait_ms", 0),
        "timeouts": raw.get("requests_errors", 0),
        "connections_opened": raw.get("connections_num", 0),
        "connections_lost": raw.get("connections_lost", 0),
        "min_size": raw.get("pool_min", 0),
        "max_size": max_size,
        "usage_ratio": round((size - available) / max_size, 4) if max_size else 0.0,
        "published_at": timezone.now().isoformat(),
    }


def publish_pool_stats() -> dict | None:
    """Publish this process's pool stats once (with the TTL); returns what was published."""
    stats = current_pool_stats()
    if stats is None:
        return None
    _redis().set(_key(), json.dumps(stats), ex=settings.POOL_STATS_TTL_S)
    return stats


def live_pool_stats() -> list[dict]:
    """Every process that published within the TTL, ordered by role then process."""
    client = _redis()
    keys = sorted(client.scan_iter(match=f"{settings.POOL_STATS_KEY_PREFIX}:*", count=500))
    if not keys:
        return []
    stats = []
    for raw in client.mget(keys):
        if raw is None:  # expired between SCAN and MGET
            continue
        try:
            stats.append(json.loads(raw))
        except ValueError:
            logger.warning("unreadable pool stats entry in Redis", extra={"value": str(raw)[:200]})
    return sorted(stats, key=lambda entry: (entry.get("role", ""), entry.get("process", "")))


def _withdraw() -> None:
    """Remove this process's entry at a clean exit, so it does not linger for the TTL."""
    if _publisher["pid"] != os.getpid():
        return
    try:
        _redis().delete(_key())
    except Exception:  # exiting anyway; the TTL removes the entry
        logger.debug("could not withdraw pool stats", exc_info=True)


def _run(stop: threading.Event, interval_s: float) -> None:
    failures = 0
    while True:
        try:
            publish_pool_stats()
            failures = 0
        except Exception:
            # Redis away: the pool page goes stale, the process carries on. Log once per outage.
            failures += 1
            if failures == 1:
                logger.warning("pool stats not published", exc_info=True)
        if stop.wait(interval_s):
            return


def start_pool_stats_publisher(*, interval_s: float | None = None) -> bool:
    """Start this process's publisher thread unless one runs already. True if it started one."""
    with _publisher_lock:
        if _publisher["pid"] == os.getpid() and _publisher["thread"] is not None and _publisher["thread"].is_alive():
            return False
        stop = threading.Event()
        thread = threading.Thread(
            target=_run,
            args=(stop, settings.POOL_STATS_INTERVAL_S if interval_s is None else interval_s),
            name="opsdeck-poolstats",
            daemon=True,
        )
        _publisher.update(pid=os.getpid(), thread=thread, stop=stop, interval_s=interval_s)
        thread.start()
        return True


def stop_pool_stats_publisher(*, withdraw: bool = True) -> None:
    with _publisher_lock:
        thread, stop = _publisher["thread"], _publisher["stop"]
        if thread is None or _publisher["pid"] != os.getpid():
            return
        stop.set()
        thread.join(timeout=5)
        if withdraw:
            _withdraw()
        _publisher.update(pid=None, thread=None, stop=None)


def _restart_in_child() -> None:
    # Threads do not survive fork(): a child of a publishing process starts its own publisher.
    # The lock may have been held by a parent thread at the fork; the child gets a fresh one.
    global _publisher_lock
    _publisher_lock = threading.Lock()
    parent_was_publishing = _publisher["thread"] is not None
    _publisher.update(pid=None, thread=None, stop=None)
    if parent_was_publishing:
        start_pool_stats_publisher(interval_s=_publisher.get("interval_s"))


os.register_at_fork(after_in_child=_restart_in_child)
atexit.register(_withdraw)


class PoolStatsCollector:
    """Prometheus collector for web's /metrics: every live process's pool, read from Redis."""

    GAUGES = (
        ("opsdeck_db_pool_size", "size", "Connections held by the process's pool (in use + idle)."),
        ("opsdeck_db_pool_available", "available", "Idle connections in the process's pool."),
        ("opsdeck_db_pool_waiting", "waiting", "Clients waiting for a connection from the process's pool."),
        ("opsdeck_db_pool_max_size", "max_size", "Maximum size of the process's pool."),
        ("opsdeck_db_pool_usage_ratio", "usage_ratio", "Connections in use / max_size of the process's pool."),
        (
            "opsdeck_db_pool_timeouts",
            "timeouts",
            "Connection requests that failed (timeout, too many waiting) since the process's pool was created.",
        ),
    )
    GAUGES_BY_NAME = tuple(name for name, _, _ in GAUGES)

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        try:
            stats = live_pool_stats()
        except Exception:
            logger.warning("pool stats unavailable for /metrics", exc_info=True)
            return
        for name, field, documentation in self.GAUGES:
            family = GaugeMetricFamily(name, documentation, labels=["process", "role"])
            for entry in stats:
                family.add_metric(
                    [str(entry.get("process", "")), str(entry.get("role", ""))], float(entry.get(field, 0))
                )
            yield family
