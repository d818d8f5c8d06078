"""Side effects of task changes: one webhook delivery job per receiver, run in parallel."""

import logging

import httpx
from celery import group, shared_task
from django.conf import settings

from tasks.models import Task

logger = logging.getLogger("opsdeck.tasks")
_http_client: httpx.Client | None = None


def http_client() -> httpx.Client:
    """One pooled client per worker process: connections are reused across deliveries."""
    global _http_client
    if _http_client is None:
        _http_client = httpx.Client(
            timeout=httpx.Timeout(settings.TASK_NOTIFY_TIMEOUT_S, connect=3.0),
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
            headers={"User-Agent": "opsdeck-webhooks/1"},
        )
    return _http_client


def queue_task_notifications(*, task_ids: list[int], event: str) -> None:
    """Queue one delivery per configured receiver; workers run them in parallel."""
    urls = settings.TASK_NOTIFY_WEBHOOK_URLS
    if not urls or not task_ids:
        return
    group(notify_task_webhook.s(url=url, task_ids=task_ids, event=event) for url in urls).apply_async()


@shared_task(
    name="tasks.notify_webhook",
    bind=True,
    # httpx's timeout is per operation (connect, then each read): leave room for it to fire
    # first, so a slow receiver ends in a retry rather than a killed job.
    soft_time_limit=settings.TASK_NOTIFY_TIMEOUT_S + 5,
    time_limit=settings.TASK_NOTIFY_TIMEOUT_S + 10,
    max_retries=3,
    ignore_result=True,
)
def notify_task_webhook(self, *, url: str, task_ids: list[int], event: str) -> int:
    tasks = list(Task.objects.filter(pk__in=task_ids[:500]).values("id", "title", "status", "priority", "assignee_id"))
    try:
        response = http_client().post(url, json={"event": event, "tasks": tasks})
        response.raise_for_status()
    except (httpx.TransportError, httpx.HTTPStatusError) as exc:
        logger.warning("webhook delivery failed", extra={"url": url, "event": event, "error": str(exc)})
        raise self.retry(exc=exc, countdown=2**self.request.retries * 5) from exc
    return response.status_code
