"""Celery autodiscovers `<app>.jobs`: importing this module registers every reconciliation job.

The jobs live with their capability; their Celery names (`reconciliation.run_execution`,
`reconciliation.requeue_stuck_executions`, `reconciliation.run_due_schedules`, `webhooks.deliver`,
`webhooks.send_due`) are what queued messages and beat schedules refer to, and they did not change
when the modules moved.
"""

from reconciliation.engine.jobs import requeue_stuck_executions, run_due_schedules, run_execution  # noqa: F401
from reconciliation.webhooks.jobs import deliver_webhook, send_due_webhooks  # noqa: F401
