"""What is waiting: pending approvals and their age, Celery queues and workers, beat jobs."""

import json
import logging
import time

from django.conf import settings
from django.core.cache import cache
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from approvals.selectors import pending_backlog
from project.celery import app as celery_app
from project.models import JobRun

logger = logging.getLogger("opsdeck.monitoring")
INSPECT_CACHE_KEY = "monitoring:celery-inspect:v1"


def approvals_pending() -> dict:
    """Pending versions (approvals' backlog selector) with the cockpit's thresholds."""
    return {**pending_backlog(), **pending_thresholds()}


def pending_thresholds() -> dict:
    # Approvals guide (000): target < 20 pending versions, alert > 50.
    return {"amber_above": settings.MONITORING_PENDING_AMBER, "red_above": settings.MONITORING_PENDING_RED}


def known_queues() -> list[str]:
    from django_celery_beat.models import PeriodicTask

    queues = {settings.CELERY_TASK_DEFAULT_QUEUE}
    queues.update(route["queue"] for route in settings.CELERY_TASK_ROUTES.values() if "queue" in route)
    queues.update(q for q in PeriodicTask.objects.exclude(queue=None).exclude(queue="").values_list("queue", flat=True))
    return sorted(queues)


def queue_depths(queues: list[str] | None = None) -> dict:
    """Messages waiting per Celery queue: LLEN of the queue's Redis list and of each priority
    sub-list kombu keeps (`queue\\x06\\x163` ...), with the transport's global key prefix (kombu's
    client adds it), all in one pipeline."""
    queues = queues if queues is not None else known_queues()
    try:
        with celery_app.connection_for_write() as conn:
            channel = conn.default_channel
            keys = [(queue, channel._q_for_pri(queue, step)) for queue in queues for step in channel.priority_steps]
            # Priority steps that map to the same key (step 0 and the default) are counted once.
            unique = list(dict.fromkeys(keys))
            with channel.client.pipeline() as pipe:
                for _queue, key in unique:
                    pipe.llen(key)
                sizes = pipe.execute()
    except Exception as exc:  # the broker being down is a finding, not a 500
        logger.warning("queue depth unavailable", extra={"error": repr(exc)})
        return {"available": False, "error": f"{type(exc).__name__}: {exc}", "queues": []}
    depth = dict.fromkeys(queues, 0)
    for (queue, _key), size in zip(unique, sizes, strict=True):
        depth[queue] += int(size or 0)
    return {
        "available": True,
        "queues": [{"queue": queue, "depth": depth[queue]} for queue in queues],
        "threshold": settings.MONITORING_QUEUE_DEPTH_MAX,
    }


def celery_inspect_live(timeout_s: float | None = None) -> dict:
    """Ask the workers (broadcast, waits `timeout_s` for each question): who answers, and their
    active, reserved and scheduled jobs. Cached for the pages, which never wait on workers."""
    timeout_s = timeout_s if timeout_s is not None else settings.MONITORING_INSPECT_TIMEOUT_S
    started = time.monotonic()
    result = {"taken_at": timezone.now().isoformat(), "workers": {}, "error": None}
    try:
        # A broadcast waits its whole timeout for workers that might still answer; once the ping
        # has counted them, the other questions stop as soon as that many replied.
        replies = {"ping": celery_app.control.inspect(timeout=timeout_s).ping() or {}}
        inspect = celery_app.control.inspect(timeout=timeout_s, limit=len(replies["ping"]) or None)
        for name in ("active", "reserved", "scheduled"):
            replies[name] = (getattr(inspect, name)() or {}) if replies["ping"] else {}
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        replies = {}
    names = set()
    for reply in replies.values():
        names.update(reply)
    for worker in sorted(names):
        result["workers"][worker] = {
            "ok": worker in replies.get("ping", {}),
            **{
                kind: [
                    {
                        "id": job.get("id") or job.get("request", {}).get("id"),
                        "name": job.get("name") or job.get("request", {}).get("name"),
                        "args": str(job.get("kwargs") or job.get("request", {}).get("kwargs") or "")[:200],
                        "eta": job.get("eta"),
                    }
                    for job in replies.get(kind, {}).get(worker, [])
                ]
                for kind in ("active", "reserved", "scheduled")
            },
        }
    result["duration_ms"] = round((time.monotonic() - started) * 1000)
    cache.set(INSPECT_CACHE_KEY, result, settings.MONITORING_INSPECT_CACHE_S)
    return result


def celery_inspect_cached() -> dict | None:
    return cache.get(INSPECT_CACHE_KEY)


def beat_jobs() -> list[dict]:
    """Every beat schedule with its next run, and the last JobRun of its job: outcome, duration."""
    from django_celery_beat.models import PeriodicTask

    last_run = JobRun.objects.filter(name=OuterRef("task")).order_by("-started_at")
    tasks = (
        PeriodicTask.objects.select_related("crontab", "interval", "solar", "clocked")
        .annotate(
            last_run_id=Subquery(last_run.values("id")[:1]),
        )
        .order_by("name")
    )
    tasks = list(tasks)
    runs = JobRun.objects.in_bulk([task.last_run_id for task in tasks if task.last_run_id])
    now = timezone.now()
    result = []
    for task in tasks:
        run = runs.get(task.last_run_id)
        next_run = None
        if task.enabled and task.scheduler is not None:
            try:
                remaining = task.schedule.remaining_estimate(task.last_run_at or now)
                next_run = max(now, now + remaining) if remaining is not None else None
            except Exception:  # a clocked schedule already run, say: no next run to show
                next_run = None
        result.append(
            {
                "id": task.pk,
                "name": task.name,
                "job": task.task,
                "queue": task.queue or "",
                "enabled": task.enabled,
                "schedule": str(task.scheduler) if task.scheduler is not None else "",
                "kwargs": json.loads(task.kwargs or "{}"),
                "last_sent_at": task.last_run_at,
                "total_run_count": task.total_run_count,
                "next_run_at": next_run,
                "last_run": (
                    {
                        "id": run.pk,
                        "status": run.status,
                        "started_at": run.started_at,
                        "finished_at": run.finished_at,
                        "duration_ms": run.duration_ms,
                        "error": run.error[-500:],
                    }
                    if run
                    else None
                ),
            }
        )
    return result


def backlog(*, live_inspect: bool = False) -> dict:
    inspect = celery_inspect_live() if live_inspect else celery_inspect_cached()
    return {
        "approvals": approvals_pending(),
        "queues": queue_depths(),
        "workers": inspect,
        "beat_jobs": beat_jobs(),
    }
