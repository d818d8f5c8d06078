"""Celery jobs of reconciliation (queue `reconciliation`; webhook delivery jobs on `webhooks`)."""

from django.conf import settings

from project.jobrunner import scheduled_job
from reconciliation import services
from reconciliation.webhooks import deliver_webhook, send_due_webhooks  # noqa: F401  (registered with Celery)


# Slots, not one lock: executions of different jobs run side by side, RECONCILIATION_CONCURRENCY
# at most; the execution's own advisory lock keeps two workers off the same one.
@scheduled_job(
    "reconciliation.run_execution",
    concurrency=settings.RECONCILIATION_CONCURRENCY,
    soft_time_limit_s=3600,
    time_limit_s=3660,
)
def run_execution(*, execution_id: int) -> dict:
    return services.execution_run(execution_id=execution_id)


@scheduled_job("reconciliation.requeue_stuck_executions", soft_time_limit_s=50, time_limit_s=55)
def requeue_stuck_executions() -> dict:
    return services.executions_requeue_stuck()


# Scheduled runs of jobs (issue 14): beat's dispatcher, defined with the workflow.
from reconciliation.workflow.jobs import run_due_schedules  # noqa: E402, F401  (registered with Celery)
