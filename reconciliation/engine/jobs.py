"""Celery jobs of the matching engine (queue `reconciliation`). Their names are stable: queued
messages, outbox rows and django-celery-beat schedules refer to them."""

from django.conf import settings

from project.jobrunner import scheduled_job
from reconciliation.engine import run, schedule


# Slots, not one lock: executions of different jobs run side by side, RECONCILIATION_CONCURRENCY
# at most; the execution's own lease keeps two workers off the same one.
@scheduled_job(
    run.RUN_EXECUTION_JOB,
    concurrency=settings.RECONCILIATION_CONCURRENCY,
    soft_time_limit_s=3600,
    time_limit_s=3660,
)
def run_execution(*, execution_id: int) -> dict:
    return run.execution_run(execution_id=execution_id)


@scheduled_job("reconciliation.requeue_stuck_executions", soft_time_limit_s=50, time_limit_s=55)
def requeue_stuck_executions() -> dict:
    return run.executions_requeue_stuck()


# Scheduled runs (issue 14): every minute, start the runs of jobs whose crontab is due.
@scheduled_job("reconciliation.run_due_schedules", soft_time_limit_s=50, time_limit_s=55)
def run_due_schedules() -> dict:
    return schedule.schedules_run_due()
