"""Every beat schedule of Opsdeck, defined once here and synced into django-celery-beat.

Job names are strings, so this module imports no domain app. `sync_schedules` (run by
`make run` and after every migrate) creates what is missing and updates the job and queue of
what exists, but keeps a crontab or enabled flag that staff changed in the admin; `--reset`
puts the defaults back. A managed schedule no longer listed here is disabled, not deleted.
"""

import json
from dataclasses import dataclass, field

from django.db import transaction

MANAGED_MARKER = "[managed by opsdeck.schedules]"


@dataclass(frozen=True)
class Schedule:
    name: str
    job: str
    queue: str
    crontab: dict  # minute, hour, day_of_week, day_of_month, month_of_year
    description: str
    # A run still queued this long after beat sent it is dropped: the next one supersedes it.
    expires_s: int | None = None
    # Keyword arguments of every run (JSON), e.g. {"name": "mv_job_performance"} for the generic
    # project.refresh_materialized_view job. Code owns them: a sync overwrites admin edits.
    kwargs: dict = field(default_factory=dict)

    def kwargs_json(self) -> str:
        # Sorted keys: the same kwargs always give the same text, so a sync changes nothing.
        return json.dumps(self.kwargs, sort_keys=True)


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
        name="Reconciliation: requeue stuck executions",
        job="reconciliation.requeue_stuck_executions",
        queue="reconciliation",
        crontab={"minute": "*/5"},
        description="Queue again executions whose worker died (no heartbeat); fail those out of attempts.",
        expires_s=240,
    ),
    # The cockpit's history (monitoring/history.py): figures every minute, counters every 5.
    Schedule(
        name="Monitoring: sample figures",
        job="monitoring.sample_metrics",
        queue="default",
        crontab={"minute": "*"},
        description="Store the cockpit's key figures (MetricSample, 14 days) and cache them for /metrics.",
        expires_s=55,
    ),
    Schedule(
        name="Monitoring: snapshot statement and index counters",
        job="monitoring.snapshot_counters",
        queue="default",
        crontab={"minute": "*/5"},
        description="Snapshot pg_stat_statements and index-usage counters for window deltas.",
        expires_s=240,
    ),
    Schedule(
        name="Monitoring: inspect workers",
        job="monitoring.inspect_workers",
        queue="default",
        crontab={"minute": "*"},
        description="Ask the Celery workers for active, reserved and scheduled jobs (cached for the pages).",
        expires_s=55,
    ),
    Schedule(
        name="Relay the outbox",
        job="project.relay_outbox",
        queue="default",
        crontab={"minute": "*"},
        description="Publish the jobs writes asked for that could not be published after commit (broker away).",
        expires_s=55,
    ),
    Schedule(
        name="Mark abandoned job runs",
        job="project.mark_abandoned_job_runs",
        queue="default",
        crontab={"minute": "*/5"},
        description="Mark JobRuns still running past their job's time limit as abandoned (worker lost).",
        expires_s=240,
    ),
    Schedule(
        name="Maintain monthly partitions",
        job="project.maintain_partitions",
        queue="maintenance",
        crontab={"minute": "15", "hour": "2"},
        description="Create partitions 6 months ahead; detach and archive those older than 6 months.",
    ),
    # Reconciliation analytics views (docs/reconciliation-analytics.md). A run still queued after
    # its period is dropped: the next one refreshes the same view.
    Schedule(
        name="Refresh mv_reconciliation_summary_daily",
        job="project.refresh_materialized_view",
        queue="maintenance",
        crontab={"minute": "5"},
        description="Refresh the daily reconciliation summary (hourly).",
        expires_s=3300,
        kwargs={"name": "mv_reconciliation_summary_daily"},
    ),
    Schedule(
        name="Refresh mv_job_performance",
        job="project.refresh_materialized_view",
        queue="maintenance",
        crontab={"minute": "10"},
        description="Refresh per-job reconciliation performance (hourly).",
        expires_s=3300,
        kwargs={"name": "mv_job_performance"},
    ),
    Schedule(
        name="Refresh mv_tenant_usage_hourly",
        job="project.refresh_materialized_view",
        queue="maintenance",
        crontab={"minute": "*/15"},
        description="Refresh hourly reconciliation usage per tenant (every 15 minutes).",
        expires_s=840,
        kwargs={"name": "mv_tenant_usage_hourly"},
    ),
    Schedule(
        name="Refresh mv_match_accuracy_by_job",
        job="project.refresh_materialized_view",
        queue="maintenance",
        crontab={"minute": "20", "hour": "3"},
        description="Refresh reviewed-match accuracy per job (daily).",
        expires_s=3600,
        kwargs={"name": "mv_match_accuracy_by_job"},
    ),
    Schedule(
        name="Delete expired API tokens",
        job="project.delete_expired_api_tokens",
        queue="maintenance",
        crontab={"minute": "40"},
        description="Delete API tokens past their expiry (requests refuse them already).",
        expires_s=3000,
    ),
    # --- reconciliation workflow (issue 14): scheduled runs of jobs ---
    Schedule(
        name="Reconciliation: start scheduled runs",
        job="reconciliation.run_due_schedules",
        queue="reconciliation",
        crontab={"minute": "*"},
        description="Start the runs of jobs whose crontab is due (skipped when no new records came).",
        expires_s=55,
    ),
    # --- end reconciliation workflow ---
    Schedule(
        name="Send due webhooks",
        job="webhooks.send_due",
        queue="webhooks",
        crontab={"minute": "*"},
        description="Queue a delivery job for every webhook delivery due for an attempt (retries, lost jobs).",
        expires_s=55,
    ),
]


def sync_schedules(*, reset: bool = False) -> dict:
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    created, updated, disabled = [], [], []
    with transaction.atomic():
        for schedule in SCHEDULES:
            fields = {"minute": "*", "hour": "*", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*"}
            fields.update(schedule.crontab)
            # Not get_or_create: staff may have made an identical crontab in the admin, and two
            # matching rows would make get() fail the whole sync.
            crontab = CrontabSchedule.objects.filter(timezone="UTC", **fields).order_by("id").first()
            if crontab is None:
                crontab = CrontabSchedule.objects.create(timezone="UTC", **fields)
            task = PeriodicTask.objects.filter(name=schedule.name).first()
            description = f"{schedule.description} {MANAGED_MARKER}"
            if task is None:
                PeriodicTask.objects.create(
                    name=schedule.name,
                    task=schedule.job,
                    queue=schedule.queue,
                    kwargs=schedule.kwargs_json(),
                    expire_seconds=schedule.expires_s,
                    crontab=crontab,
                    description=description,
                    enabled=True,
                )
                created.append(schedule.name)
                continue
            task.task, task.queue, task.description = schedule.job, schedule.queue, description
            task.kwargs = schedule.kwargs_json()
            task.expire_seconds = schedule.expires_s
            if reset:
                task.crontab, task.interval, task.solar, task.clocked = crontab, None, None, None
                task.enabled = True
            task.save()
            updated.append(schedule.name)
        names = {schedule.name for schedule in SCHEDULES}
        for task in PeriodicTask.objects.filter(description__contains=MANAGED_MARKER, enabled=True):
            if task.name not in names:
                task.enabled = False
                task.save(update_fields=["enabled"])
                disabled.append(task.name)
    return {"created": created, "updated": updated, "disabled": disabled}


def sync_schedules_after_migrate(sender, using="default", **kwargs) -> None:
    if using == "default":
        sync_schedules()
