"""Celery jobs of webhook delivery (queue `webhooks`): one attempt per `webhooks.deliver`, and
`webhooks.send_due` every minute for retries and lost jobs. The names are stable (queued messages
and beat schedules refer to them)."""

from celery import shared_task
from django.conf import settings

from project.celery import app as celery_app
from project.jobrunner import scheduled_job
from reconciliation.webhooks import delivery


@shared_task(
    name=delivery.DELIVER_JOB,
    acks_late=True,  # idempotent: a redelivered message finds the row leased or done
    ignore_result=True,
    soft_time_limit=delivery.DELIVER_SOFT_TIME_LIMIT_S,
    time_limit=delivery.DELIVER_TIME_LIMIT_S,
)
def deliver_webhook(delivery_id: int) -> dict:
    return delivery.webhook_deliver(delivery_id=delivery_id)


@scheduled_job(delivery.SEND_DUE_JOB, soft_time_limit_s=50, time_limit_s=55)
def send_due_webhooks() -> dict:
    """Queue a deliver job for every due delivery (first attempts whose job was lost, and retries)."""
    delivery_ids = list(delivery.webhook_deliveries_due(limit=settings.WEBHOOK_SEND_DUE_BATCH))
    if delivery_ids:
        _enqueue_deliveries(delivery_ids, expires_s=delivery.SEND_DUE_EXPIRES_S)
    return {"queued": len(delivery_ids), "batch_full": len(delivery_ids) == settings.WEBHOOK_SEND_DUE_BATCH}


def _enqueue_deliveries(delivery_ids: list[int], *, expires_s: int | None = None) -> None:
    # One broker connection for the whole batch.
    with celery_app.producer_or_acquire() as producer:
        for delivery_id in delivery_ids:
            deliver_webhook.apply_async((delivery_id,), producer=producer, expires=expires_s)
