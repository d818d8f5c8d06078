"""Every beat schedule of Opsdeck, collected here and synced into django-celery-beat.

Each app lists its schedules in `<app>/schedules.py` (a `SCHEDULES` list of `Schedule`); the
platform's own are below; each registered materialized view gets one derived from its period in
project/matviews.py. This module names no domain app or job: it imports every installed app's
`schedules` module. `sync_schedules` (run by `make run` and after every migrate) creates what is
missing and updates the job and queue of what exists, but keeps a crontab or enabled flag that
staff changed in the admin; `--reset` puts the defaults back. A managed schedule no longer
listed anywhere is disabled, not deleted.
"""

import importlib
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.db import transaction

from project.matviews import refresh_crontab, refresh_expires_s, registered_materialized_views

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


# The platform's own jobs. Domain apps list theirs in <app>/schedules.py.
PLATFORM_SCHEDULES = [
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
    Schedule(
        name="Delete expired API tokens",
        job="project.delete_expired_api_tokens",
        queue="maintenance",
        crontab={"minute": "40"},
        description="Delete API tokens past their expiry (requests refuse them already).",
        expires_s=3000,
    ),
]


def app_schedules() -> list[Schedule]:
    """The SCHEDULES of every installed app's `schedules` module (Opsdeck's apps, not third-party
    ones), in INSTALLED_APPS order."""
    collected = []
    for config in apps.get_app_configs():
        module_name = f"{config.name}.schedules"
        ours = Path(config.path).is_relative_to(settings.BASE_DIR) and config.name != "project"
        if ours and importlib.util.find_spec(module_name) is not None:
            collected.extend(importlib.import_module(module_name).SCHEDULES)
    return collected


def materialized_view_schedules() -> list[Schedule]:
    """One refresh per registered view, its period from the registry (defined once, there). A run
    still queued after its period is dropped: the next one refreshes the same view."""
    return [
        Schedule(
            name=f"Refresh {view.name}",
            job="project.refresh_materialized_view",
            queue="maintenance",
            crontab=refresh_crontab(view),
            description=f"Refresh {view.name} (every {view.refresh_every_s} s): {view.description}",
            expires_s=refresh_expires_s(view),
            kwargs={"name": view.name},
        )
        for view in registered_materialized_views()
    ]


def all_schedules() -> list[Schedule]:
    schedules = [*PLATFORM_SCHEDULES, *app_schedules(), *materialized_view_schedules()]
    names = [schedule.name for schedule in schedules]
    if duplicates := sorted({name for name in names if names.count(name) > 1}):
        raise ValueError(f"schedule names must be unique; listed twice: {duplicates}")
    return schedules


def __getattr__(name: str):
    # `from project.schedules import SCHEDULES`: every schedule, collected when asked (apps ready).
    if name == "SCHEDULES":
        return all_schedules()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def sync_schedules(*, reset: bool = False) -> dict:
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    created, updated, disabled = [], [], []
    schedules = all_schedules()
    with transaction.atomic():
        for schedule in schedules:
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
        names = {schedule.name for schedule in schedules}
        for task in PeriodicTask.objects.filter(description__contains=MANAGED_MARKER, enabled=True):
            if task.name not in names:
                task.enabled = False
                task.save(update_fields=["enabled"])
                disabled.append(task.name)
    return {"created": created, "updated": updated, "disabled": disabled}


def sync_schedules_after_migrate(sender, using="default", **kwargs) -> None:
    if using == "default":
        sync_schedules()
