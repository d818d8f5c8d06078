"""Celery autodiscovers `<app>.jobs`: importing this module registers every reconciliation job.

The jobs live with their capability; their Celery names (`reconciliation.run_execution`,
`reconciliation.requeue_stuck_executions`, `webhooks.deliver`, `webhooks.send_due`) are what queued
messages and beat schedules refer to, and they did not change when the modules moved.
"""

from reconciliation.engine.jobs import requeue_stuck_executions, run_execution  # noqa: F401
from reconciliation.webhooks.jobs import deliver_webhook, send_due_webhooks  # noqa: F401

# Scheduled runs of jobs (issue 14): beat's dispatcher, defined with the workflow.
from reconciliation.workflow.jobs import run_due_schedules  # noqa: F401
