"""The Celery app. Jobs live in each app's jobs.py (a Django app named `tasks` would otherwise
collide with Celery's default `<app>.tasks` discovery)."""

import os

from celery import Celery
from celery.signals import (
    beat_init,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("opsdeck")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(related_name="jobs")


@worker_ready.connect
def serve_worker_metrics(**kwargs) -> None:
    """With WORKER_METRICS_PORT set, the worker serves its own /metrics (e.g. worker:9808 in Docker,
    where web and worker do not share a PROMETHEUS_MULTIPROC_DIR). Prefork children record into
    the multiprocess directory; this endpoint, in the main process, adds them up."""
    port = os.environ.get("WORKER_METRICS_PORT")
    if not port:
        return
    from prometheus_client import CollectorRegistry, start_http_server

    registry = None
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    # Loopback unless widened: the endpoint has no auth (Docker sets WORKER_METRICS_ADDR=0.0.0.0
    # on a private network that only Prometheus reaches).
    start_http_server(int(port), addr=os.environ.get("WORKER_METRICS_ADDR", "127.0.0.1"), registry=registry)


# The outbox relay at a worker's start is connected in project/jobs.py (outbox imports this app).


@worker_process_init.connect
@beat_init.connect
def publish_pool_stats_of_this_process(**kwargs) -> None:
    """Each prefork child (or the solo pool's process) and beat publish their DB pool stats."""
    from project.poolstats import start_pool_stats_publisher

    start_pool_stats_publisher()


@worker_process_shutdown.connect
def withdraw_pool_stats_of_this_process(**kwargs) -> None:
    # Prefork children leave with os._exit (no atexit): withdraw the entry here.
    from project.poolstats import stop_pool_stats_publisher

    stop_pool_stats_publisher()


_origin_tokens: dict[str, object] = {}


@task_prerun.connect
def attribute_task_queries(task_id=None, task=None, **kwargs) -> None:
    """Every Celery task's queries carry /* opsdeck:job=<task name> */ (project/db/attribution.py);
    jobs run through the job runner set the same origin themselves."""
    from project.db.attribution import set_origin

    _origin_tokens[task_id] = set_origin(job=task.name)


@task_postrun.connect
def end_task_attribution(task_id=None, **kwargs) -> None:
    from project.db.attribution import reset_origin

    token = _origin_tokens.pop(task_id, None)
    if token is not None:
        reset_origin(token)
