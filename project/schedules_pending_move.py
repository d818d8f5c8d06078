"""Reconciliation's beat schedules, parked here until they move to reconciliation/schedules.py.

Transitional: reconciliation/ was being restructured when the schedule registry landed, so its
entries could not be added there. Move this SCHEDULES list verbatim into a new
`reconciliation/schedules.py`, then leave `SCHEDULES = []` here (or delete this module and its
import in project/schedules.py) — project/ then names no domain job."""

from project.schedules import Schedule

SCHEDULES = [
    Schedule(
        name="Reconciliation: requeue stuck executions",
        job="reconciliation.requeue_stuck_executions",
        queue="reconciliation",
        crontab={"minute": "*/5"},
        description="Queue again executions whose worker died (no heartbeat); fail those out of attempts.",
        expires_s=240,
    ),
    Schedule(
        name="Send due webhooks",
        job="webhooks.send_due",
        queue="webhooks",
        crontab={"minute": "*"},
        description="Queue a delivery job for every webhook delivery due for an attempt (retries, lost jobs).",
        expires_s=55,
    ),
]
