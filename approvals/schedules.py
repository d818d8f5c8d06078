"""Beat schedules of approvals, collected by project/schedules.py."""

from project.schedules import Schedule

SCHEDULES = [
    Schedule(
        name="Approvals automation",
        job="approvals.run_automation",
        queue="automation",
        crontab={"minute": "*"},
        description="Decide pending versions with the active approval rule.",
        expires_s=55,
    ),
    Schedule(
        name="Approvals notifications",
        job="approvals.send_notifications",
        queue="default",
        crontab={"minute": "*"},
        description="Email each subscribed staff member a digest of the approvals conditions that fire.",
        expires_s=55,
    ),
]
