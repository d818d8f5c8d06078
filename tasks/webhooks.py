"""Task events for the receivers in TASK_NOTIFY_WEBHOOK_URLS, delivered by the platform's webhook
sender (project/webhooks.py): signed with TASK_NOTIFY_WEBHOOK_SECRET, SSRF-guarded, retried with
backoff, dead after WEBHOOK_MAX_ATTEMPTS, redeliverable from the admin (docs/webhooks.md)."""

import uuid

from django.conf import settings
from django.utils import timezone
from prometheus_client import Counter

from project.webhooks import WebhookSender
from tasks.models import Task, TaskWebhookDelivery

DELIVER_JOB = "tasks.notify_deliver"
SEND_DUE_JOB = "tasks.notify_send_due"
PAYLOAD_MAX_TASKS = 500
TASK_FIELDS = ("id", "title", "status", "priority", "assignee_id")

task_webhook_attempts_total = Counter(
    "opsdeck_task_webhook_attempts_total",
    "Task webhook delivery attempts, by event and the delivery's state after the attempt.",
    ["event", "outcome"],
)

sender = WebhookSender(
    model=TaskWebhookDelivery,
    deliver_job=DELIVER_JOB,
    # Read at each attempt: a rotated secret signs the retries too.
    target=lambda delivery: (delivery.url, settings.TASK_NOTIFY_WEBHOOK_SECRET),
    attempts=task_webhook_attempts_total,
    timeout_s=lambda: settings.TASK_NOTIFY_TIMEOUT_S,
)


def queue_task_notifications(*, task_ids: list[int], event: str) -> list[int]:
    """In the write's transaction: one delivery per configured receiver, the tasks as this
    transaction wrote them, each with its own event id (its Idempotency-Key); the deliver jobs
    are published after commit. Returns the delivery ids."""
    urls = settings.TASK_NOTIFY_WEBHOOK_URLS
    if not urls or not task_ids:
        return []
    now = timezone.now()
    tasks = list(Task.objects.filter(pk__in=task_ids[:PAYLOAD_MAX_TASKS]).order_by("pk").values(*TASK_FIELDS))
    deliveries = TaskWebhookDelivery.objects.bulk_create(
        TaskWebhookDelivery(
            url=url,
            event=event,
            payload={"id": str(uuid.uuid4()), "event": event, "tasks": tasks},
            next_attempt_at=now,
        )
        for url in urls
    )
    ids = [delivery.pk for delivery in deliveries]
    sender.enqueue_on_commit(ids)
    return ids


def check_signing_secret(app_configs=None, **kwargs) -> list:
    """`manage.py check --deploy`: receivers configured without a signing secret get unsigned POSTs."""
    from django.core.checks import Warning as CheckWarning

    if settings.TASK_NOTIFY_WEBHOOK_URLS and not settings.TASK_NOTIFY_WEBHOOK_SECRET:
        hint = "Set TASK_NOTIFY_WEBHOOK_SECRET so receivers can verify X-Opsdeck-Signature."
        return [CheckWarning("Task webhooks are sent unsigned.", hint=hint, id="tasks.W001")]
    return []
