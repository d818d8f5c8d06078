"""Side effects of task changes: one webhook delivery job per receiver, run in parallel."""

import logging
import uuid

import httpx
from celery import shared_task
from django.conf import settings

from project.outbox import effect_once, outbox_enqueue_many
from tasks.models import Task

logger = logging.getLogger("opsdeck.tasks")
_http_client: httpx.Client | None = None
NOTIFY_JOB = "tasks.notify_webhook"


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
    """In the write's transaction: one outbox message per configured receiver, each with its own
    event id (the Idempotency-Key its delivery carries); workers deliver them in parallel."""
    urls = settings.TASK_NOTIFY_WEBHOOK_URLS
    if not urls or not task_ids:
        return
    keys = [uuid.uuid4() for _ in urls]
    outbox_enqueue_many(
        [
            (NOTIFY_JOB, {"url": url, "task_ids": task_ids, "event": event, "event_id": str(key)}, key)
            for url, key in zip(urls, keys, strict=True)
        ]
    )


@shared_task(
    name=NOTIFY_JOB,
    bind=True,
    # httpx's timeout is per operation (connect, then each read): leave room for it to fire
    # first, so a slow receiver ends in a retry rather than a killed job.
    soft_time_limit=settings.TASK_NOTIFY_TIMEOUT_S + 5,
    time_limit=settings.TASK_NOTIFY_TIMEOUT_S + 10,
    max_retries=3,
    ignore_result=True,
)
def notify_task_webhook(self, *, url: str, task_ids: list[int], event: str, event_id: str = "") -> int | None:
    """POST the event once: a message published twice (outbox relay, redelivery) finds the event
    delivered, or being delivered, and stops. Receivers can dedupe on Idempotency-Key too."""
    with effect_once(event_id or self.request.id, lease_s=settings.TASK_NOTIFY_TIMEOUT_S * 4 + 10) as mine:
        if not mine:
            logger.info("webhook already delivered", extra={"url": url, "event": event, "event_id": event_id})
            return None
        tasks = list(
            Task.objects.filter(pk__in=task_ids[:500]).values("id", "title", "status", "priority", "assignee_id")
        )
        try:
            response = http_client().post(
                url,
                json={"id": event_id, "event": event, "tasks": tasks},
                headers={"Idempotency-Key": event_id} if event_id else None,
            )
            response.raise_for_status()
        except (httpx.TransportError, httpx.HTTPStatusError) as exc:
            logger.warning("webhook delivery failed", extra={"url": url, "event": event, "error": str(exc)})
            raise self.retry(exc=exc, countdown=2**self.request.retries * 5) from exc
    return response.status_code
