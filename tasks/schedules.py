"""Beat schedules of tasks, collected by project/schedules.py."""

from project.schedules import Schedule

SCHEDULES = [
    Schedule(
        name="Send due task webhooks",
        job="tasks.notify_send_due",
        queue="webhooks",
        crontab={"minute": "*"},
        description="Queue a delivery job for every task webhook delivery due for an attempt (retries, lost jobs).",
        expires_s=55,
    ),
]
