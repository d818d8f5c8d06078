"""Scheduled runs: a job's crontab, and the beat job that starts its due runs.

Beat runs `reconciliation.run_due_schedules` every minute (one entry in reconciliation/schedules.py),
through the job runner (advisory lock, JobRun row). It takes the due schedules with SKIP LOCKED,
and for each due slot records a ScheduledRun: `started` (an execution was queued; the job runner
runs it as `reconciliation.run_execution`), `skipped` (no new records since the last started run,
or an execution is still queued or running) or `failed` (the job is inactive or its rules are
invalid). Slots missed while beat was down are not replayed: the next run is the next slot after
now. Crontabs are read in UTC.
"""

from datetime import UTC, datetime, timedelta

from celery.schedules import ParseException
from celery.schedules import crontab as celery_crontab
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from project.activity import activity_record
from reconciliation.engine.services import execution_start
from reconciliation.errors import ExecutionActive, ReconciliationError
from reconciliation.models import Execution, MatchedRecord, ReconciliationException, ReconciliationJob, Record
from reconciliation.workflow.errors import InvalidWorkflowInput
from reconciliation.workflow.models import JobSchedule, ScheduledRun

CATEGORY = "reconciliation"
DUE_BATCH = 100
# Records created this long before the last started run still count as new if the matcher never
# saw them: an ingest transaction open across the run commits rows stamped before it.
NEW_RECORD_LOOKBACK = timedelta(hours=1)
Outcome = JobSchedule.Outcome


def parse_crontab(expression: str) -> celery_crontab:
    """'minute hour day-of-month month day-of-week' (cron's order) -> a celery crontab, or a 400."""
    fields = expression.split()
    if len(fields) != 5:
        raise InvalidWorkflowInput(
            f"A crontab has 5 fields (minute hour day-of-month month day-of-week); {expression!r} has {len(fields)}."
        )
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    try:
        return celery_crontab(
            minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year, day_of_week=day_of_week
        )
    except (ValueError, KeyError, IndexError, ParseException) as error:
        raise InvalidWorkflowInput(f"Invalid crontab {expression!r}: {error}") from None


def next_run_after(expression: str, moment: datetime) -> datetime:
    """The first slot of `expression` strictly after `moment` (UTC)."""
    last, delta, _now = parse_crontab(expression).remaining_delta(moment.astimezone(UTC))
    return (last + delta).astimezone(UTC).replace(second=0, microsecond=0)


def _audit(action: str, job: ReconciliationJob, user, **metadata) -> None:
    activity_record(
        category=CATEGORY, action=action, user=user, entity_type="reconciliation.job", entity_id=job.pk,
        metadata=metadata, tenant_id=job.tenant_id,
    )  # fmt: skip


@transaction.atomic
def schedule_set(*, job: ReconciliationJob, crontab: str, is_enabled: bool = True, user=None) -> JobSchedule:
    """Create or change a job's schedule; the next run is recomputed from now."""
    crontab = " ".join(crontab.split())
    next_run_at = next_run_after(crontab, timezone.now()) if is_enabled else None
    schedule, created = JobSchedule.objects.select_for_update().get_or_create(
        job=job, defaults={"tenant_id": job.tenant_id, "crontab": crontab}
    )
    schedule.crontab, schedule.is_enabled, schedule.next_run_at = crontab, is_enabled, next_run_at
    schedule.save()
    _audit("schedule_create" if created else "schedule_update", job, user, crontab=crontab, is_enabled=is_enabled)
    return schedule


@transaction.atomic
def schedule_delete(*, schedule: JobSchedule, user=None) -> None:
    _audit("schedule_delete", schedule.job, user, crontab=schedule.crontab)
    schedule.delete()


def _has_new_records(schedule: JobSchedule) -> bool:
    """Records the matcher has not seen: neither matched nor ever an exception, created since the
    last started run (less the lookback). A first run always counts as new."""
    if schedule.records_seen_until is None:
        return True
    return (
        Record.objects.filter(job_id=schedule.job_id, created_at__gt=schedule.records_seen_until - NEW_RECORD_LOOKBACK)
        .exclude(Exists(MatchedRecord.objects.filter(record_id=OuterRef("pk"))))
        .exclude(Exists(ReconciliationException.objects.filter(record_id=OuterRef("pk"))))
        .exists()
    )


def _run_one(schedule: JobSchedule, now: datetime) -> tuple[str, str, Execution | None]:
    job = schedule.job
    if not job.is_active:
        return Outcome.FAILED, "the job is inactive", None
    active = Execution.objects.filter(job=job, status__in=[Execution.Status.QUEUED, Execution.Status.RUNNING])
    active_id = active.values_list("id", flat=True).first()
    if active_id is not None:
        return Outcome.SKIPPED, f"execution {active_id} is still queued or running", None
    if not _has_new_records(schedule):
        return Outcome.SKIPPED, f"no new records since {schedule.records_seen_until:%Y-%m-%d %H:%M} UTC", None
    try:
        with transaction.atomic():
            execution = execution_start(job=job)
    except ExecutionActive as error:
        return Outcome.SKIPPED, str(error), None
    except ReconciliationError as error:
        return Outcome.FAILED, str(error)[:300], None
    schedule.records_seen_until = now
    return Outcome.STARTED, "", execution


def schedules_run_due(*, now: datetime | None = None) -> dict:
    """Body of the beat job: run every due schedule once, record the outcome, plan the next slot."""
    now = now or timezone.now()
    outcomes: dict[str, list[int]] = {Outcome.STARTED: [], Outcome.SKIPPED: [], Outcome.FAILED: []}
    with transaction.atomic():
        due = list(
            JobSchedule.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("job")
            .filter(is_enabled=True, next_run_at__lte=now)
            .order_by("next_run_at")[:DUE_BATCH]
        )
        for schedule in due:
            outcome, reason, execution = _run_one(schedule, now)
            ScheduledRun.objects.create(
                tenant_id=schedule.tenant_id, job_id=schedule.job_id, due_at=schedule.next_run_at,
                outcome=outcome, reason=reason, execution=execution,
            )  # fmt: skip
            schedule.last_run_at, schedule.last_outcome, schedule.last_reason = now, outcome, reason
            if execution is not None:
                schedule.last_execution = execution
            schedule.next_run_at = next_run_after(schedule.crontab, max(now, schedule.next_run_at))
            schedule.save()
            outcomes[outcome].append(schedule.job_id)
    return {"due": len(due), **outcomes}
