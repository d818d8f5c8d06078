"""Side effects of task changes: webhook deliveries, one job per delivery, run in parallel, and
the every-minute job that sends the due retries (tasks/webhooks.py, project/webhooks.py)."""

from celery import shared_task
from django.utils import timezone

from project.jobrunner import scheduled_job
from tasks.models import Task, TaskWebhookDelivery
from tasks.webhooks import DELIVER_JOB, PAYLOAD_MAX_TASKS, SEND_DUE_JOB, TASK_FIELDS, queue_task_notifications, sender

__all__ = ["deliver_task_webhook", "notify_task_webhook", "queue_task_notifications", "send_due_task_webhooks"]
LEGACY_NOTIFY_JOB = "tasks.notify_webhook"


@shared_task(
    name=DELIVER_JOB,
    acks_late=True,  # idempotent: a redelivered message finds the row leased or done
    ignore_result=True,
    soft_time_limit=sender.soft_time_limit_s(),
    time_limit=sender.time_limit_s(),
)
def deliver_task_webhook(delivery_id: int) -> dict:
    return sender.deliver(delivery_id)


@scheduled_job(SEND_DUE_JOB, soft_time_limit_s=50, time_limit_s=55)
def send_due_task_webhooks() -> dict:
    """Queue a deliver job for every due task webhook delivery (retries, and first attempts whose job was lost)."""
    return sender.send_due()


@shared_task(name=LEGACY_NOTIFY_JOB, acks_late=True, ignore_result=True)
def notify_task_webhook(*, url: str, task_ids: list[int], event: str, event_id: str = "") -> dict:
    """Messages queued before deliveries had rows (deploy-time outbox and broker leftovers): store
    the delivery they describe, once per event id, and send it like any other. Remove this job
    once no `tasks.notify_webhook` message can be waiting."""
    delivery = TaskWebhookDelivery.objects.filter(payload__id=event_id).first() if event_id else None
    if delivery is None:
        tasks = list(Task.objects.filter(pk__in=task_ids[:PAYLOAD_MAX_TASKS]).order_by("pk").values(*TASK_FIELDS))
        delivery = TaskWebhookDelivery.objects.create(
            url=url,
            event=event,
            payload={"id": event_id, "event": event, "tasks": tasks},
            next_attempt_at=timezone.now(),
        )
    return sender.deliver(delivery.pk)
