"""/health (the process answers), /ready (its dependencies answer) and guarded /metrics."""

import hmac
import ipaddress
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from django.conf import settings
from django.db import connections
from django.http import HttpResponse, HttpResponseForbidden, JsonResponse
from django.views.decorators.cache import never_cache
from prometheus_client import CONTENT_TYPE_LATEST

from project.metrics import render_metrics

_checks_pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="ready-check")


@never_cache
def health(request):
    """Liveness: no I/O, so a slow database never gets a healthy process restarted."""
    return JsonResponse({"status": "ok"})


def check_database() -> None:
    connection = connections["default"]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        # Checks run in pool threads: hand the connection back (a broken one is discarded), or
        # each thread would keep one for good and never see the database come back.
        connection.close()


def check_redis() -> None:
    from django_redis import get_redis_connection

    get_redis_connection("default").ping()


def check_broker() -> None:
    from project.celery import app

    # Every socket step bounded by the check's timeout too: a stalled (not closed) Redis would
    # otherwise hold this pool thread for the broker's socket_timeout, and the next /ready's
    # checks would queue behind it.
    timeout_s = settings.READY_CHECK_TIMEOUT_S
    options = {"socket_connect_timeout": timeout_s, "socket_timeout": timeout_s, "max_retries": 0}
    with app.connection_for_write(connect_timeout=timeout_s, transport_options=options) as conn:
        conn.ensure_connection(max_retries=0, timeout=timeout_s)


READY_CHECKS = {"database": check_database, "redis": check_redis, "broker": check_broker}


def _timed(check) -> float:
    started = time.perf_counter()
    check()
    return round((time.perf_counter() - started) * 1000, 1)


@never_cache
def ready(request):
    """Readiness: database, Redis and broker each answer within READY_CHECK_TIMEOUT_S."""
    futures = {name: _checks_pool.submit(_timed, check) for name, check in READY_CHECKS.items()}
    deadline = time.monotonic() + settings.READY_CHECK_TIMEOUT_S
    results, failed = {}, []
    for name, future in futures.items():
        try:
            results[name] = {"ok": True, "ms": future.result(timeout=max(0.0, deadline - time.monotonic()))}
        except FutureTimeout:
            results[name] = {"ok": False, "error": f"no answer within {settings.READY_CHECK_TIMEOUT_S}s"}
            failed.append(name)
        except Exception as exc:  # any failure of a dependency is "not ready", never a 500
            results[name] = {"ok": False, "error": type(exc).__name__}
            failed.append(name)
    if failed:
        return JsonResponse({"status": "unavailable", "failed": failed, "checks": results}, status=503)
    return JsonResponse({"status": "ready", "checks": results})


def metrics_allowed(request) -> bool:
    if settings.METRICS_TOKEN:
        supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if supplied and hmac.compare_digest(supplied, settings.METRICS_TOKEN):
            return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in settings.METRICS_ALLOWED_NETWORKS)


@never_cache
def metrics(request):
    if not metrics_allowed(request):
        return HttpResponseForbidden("metrics are served to allowed networks or with the metrics token\n")
    # Recorded metrics plus scrape-time collectors (pool stats, queue depths: project.metrics).
    return HttpResponse(render_metrics(), content_type=CONTENT_TYPE_LATEST)
