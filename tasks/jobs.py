"""Side effects of task changes: webhook deliveries, one job per delivery, run in parallel, and
the every-minute job that sends the due retries (tasks/webhooks.py, project/webhooks.py)."""

from celery import shared_task

from project.jobrunner import scheduled_job
from tasks.webhooks import DELIVER_JOB, SEND_DUE_JOB, queue_task_notifications, sender

__all__ = ["deliver_task_webhook", "queue_task_notifications", "send_due_task_webhooks"]


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
