"""Beat schedules of reconciliation, collected by project/schedules.py (analytics views' refreshes
derive from project/matviews.py's registry, not from here)."""

from project.schedules import Schedule

SCHEDULES = [
    Schedule(
        name="Reconciliation: requeue stuck executions",
        job="reconciliation.requeue_stuck_executions",
        queue="reconciliation",
        crontab={"minute": "*/5"},
        description="Queue again stuck executions (no heartbeat, or never picked up); fail those out of attempts.",
        expires_s=240,
    ),
    Schedule(
        name="Reconciliation: start scheduled runs",
        job="reconciliation.run_due_schedules",
        queue="reconciliation",
        crontab={"minute": "*"},
        description="Start the runs of jobs whose crontab is due (skipped when no new records came).",
        expires_s=55,
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
