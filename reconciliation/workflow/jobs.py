"""Celery job of the workflow (registered through reconciliation/jobs.py, which Celery discovers)."""

from project.jobrunner import scheduled_job
from reconciliation.workflow.schedule import schedules_run_due


@scheduled_job("reconciliation.run_due_schedules", soft_time_limit_s=50, time_limit_s=55)
def run_due_schedules() -> dict:
    return schedules_run_due()
