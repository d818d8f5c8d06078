"""Celery jobs of webhook delivery (queue `webhooks`): one attempt per `webhooks.deliver`, and
`webhooks.send_due` every minute for retries and lost jobs. The names are stable (queued messages
and beat schedules refer to them); the work is the platform sender's (project/webhooks.py)."""

from celery import shared_task

from project.jobrunner import scheduled_job
from reconciliation.webhooks.delivery import DELIVER_JOB, SEND_DUE_JOB, sender


@shared_task(
    name=DELIVER_JOB,
    acks_late=True,  # idempotent: a redelivered message finds the row leased or done
    ignore_result=True,
    soft_time_limit=sender.soft_time_limit_s(),
    time_limit=sender.time_limit_s(),
)
def deliver_webhook(delivery_id: int) -> dict:
    return sender.deliver(delivery_id)


@scheduled_job(SEND_DUE_JOB, soft_time_limit_s=50, time_limit_s=55)
def send_due_webhooks() -> dict:
    """Queue a deliver job for every due delivery (first attempts whose job was lost, and retries)."""
    return sender.send_due()
