"""The one way to write a scheduled job: `@scheduled_job("app.name")`.

Every run (a) takes a lease named after the job (a `project_lease` row: project/db/locks.py,
which holds through PgBouncer's transaction pooling), so the same job never runs twice at once
across workers and beat instances (a second start is recorded as skipped, not
queued behind) — or, with `concurrency=N`, one of N slots, for jobs built to share work (SKIP
LOCKED); (b) records a JobRun row with status, duration, result and error; (c) retries
transient database and broker errors with exponential backoff. A job that decides not to run
(an overload guard, say) raises JobSkipped(reason), and its JobRun says so.
"""

import functools
import logging
import time
import traceback
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models.functions import Now
from django.utils import timezone
from prometheus_client import Counter, Histogram
from redis.exceptions import ConnectionError as RedisConnectionError

from project.beat import SCHEDULE_HEADER, SLOT_HEADER
from project.db.attribution import sql_origin
from project.db.locks import lease, leases_owned_by
from project.models import JobRun

logger = logging.getLogger("opsdeck.jobs")
TRANSIENT_ERRORS = (OperationalError, InterfaceError, RedisConnectionError)
RETRY_BACKOFF_BASE_S = 5
RETRY_BACKOFF_MAX_S = 300

# Every run's outcome, also for runs skipped at the lock (JobRun rows say the same, per run).
job_runs_total = Counter("opsdeck_job_runs_total", "Scheduled job runs by outcome.", ["job", "status"])
job_run_duration_seconds = Histogram(
    "opsdeck_job_run_duration_seconds",
    "Wall time of scheduled job runs that got their lock (any outcome).",
    ["job"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1200),
)


class JobSkipped(Exception):
    """Raised by a job that chose not to run; the reason is recorded on its JobRun, with `details`
    (JSON) beside it so a skip of one kind can be counted in SQL (JobRun.result ? key)."""

    def __init__(self, reason: str, *, details: dict | None = None):
        super().__init__(reason)
        self.details = details or {}


def retry_countdown_s(retries: int) -> int:
    return min(RETRY_BACKOFF_BASE_S * 2**retries, RETRY_BACKOFF_MAX_S)


def scheduled_job(
    name: str, *, soft_time_limit_s: int = 240, time_limit_s: int = 300, max_retries: int = 3, concurrency: int = 1
):
    """Turn `func(**kwargs) -> dict` into a locked, recorded, retried Celery job named `name`."""

    def decorator(func):
        @shared_task(
            name=name,
            bind=True,
            soft_time_limit=soft_time_limit_s,
            time_limit=time_limit_s,
            max_retries=max_retries,
            # Jobs are idempotent (they pick up only work not yet done), so a redelivery after a
            # worker crash is safe.
            acks_late=True,
        )
        @functools.wraps(func)
        def job(self, **kwargs):
            return run_job(name, func, kwargs, celery_task=self, concurrency=concurrency, time_limit_s=time_limit_s)

        job.run_now = functools.partial(run_job, name, func, concurrency=concurrency, time_limit_s=time_limit_s)
        return job

    return decorator


@contextmanager
def _job_slot(name: str, concurrency: int):
    """Yield True holding one of the job's `concurrency` leases, or False if all are held."""
    with ExitStack() as stack:
        for slot in range(concurrency):
            lock_name = f"job:{name}" if concurrency == 1 else f"job:{name}:{slot}"
            if stack.enter_context(lease(lock_name)):
                yield True
                return
        yield False


def run_job(name: str, func, kwargs: dict, celery_task=None, concurrency: int = 1, time_limit_s: int = 300) -> dict:
    # Every query of the run, its lock and JobRun rows included, names the job (SQL comment).
    # Its leases (the job's, and any its body takes) belong to the Celery message: a redelivery
    # after a lost worker takes them back at once; others wait out the hard time limit.
    celery_id = getattr(getattr(celery_task, "request", None), "id", None) or ""
    with sql_origin(job=name), leases_owned_by(celery_id, time_limit_s):
        return _run_job(name, func, kwargs, celery_task=celery_task, concurrency=concurrency)


def _run_job(name: str, func, kwargs: dict, celery_task=None, concurrency: int = 1) -> dict:
    request = getattr(celery_task, "request", None)
    celery_id = getattr(request, "id", None) or ""
    abandoned = _abandon_earlier_attempts(celery_id)
    if abandoned >= settings.JOB_MAX_REDELIVERIES:
        # Each delivery so far killed its worker: stop here (acked), or it would loop forever.
        _record_unrun(name, celery_id, JobRun.Status.FAILED, error=f"gave up: its worker was lost {abandoned} times")
        return {"failed": f"worker lost {abandoned} times"}
    schedule, slot_start = _schedule_slot(request)
    run = _claim_run(name, celery_id, schedule, slot_start)
    if run is None:
        _record_unrun(
            name,
            celery_id,
            JobRun.Status.SKIPPED,
            result={"skipped": f"duplicate: {schedule} already ran {slot_start}"},
        )
        logger.warning("job skipped: slot already run (a second beat?)", extra={"job": name, "schedule": schedule})
        return {"skipped": "duplicate"}
    with _job_slot(name, concurrency) as acquired:
        if not acquired:
            # Counted, not timed: the histogram is for runs that did work.
            JobRun.objects.filter(pk=run.pk).update(
                status=JobRun.Status.SKIPPED,
                finished_at=Now(),
                duration_ms=0,
                result={"skipped": "another run of this job holds its lock"},
            )
            job_runs_total.labels(job=name, status=JobRun.Status.SKIPPED).inc()
            logger.info("job skipped: already running", extra={"job": name})
            return {"skipped": True}
        started = time.perf_counter()
        try:
            result = func(**kwargs) or {}
        except JobSkipped as skipped:
            _finish(run, started, JobRun.Status.SKIPPED, result={**skipped.details, "skipped": str(skipped)})
            logger.warning("job skipped", extra={"job": name, "reason": str(skipped)})
            return {"skipped": str(skipped)}
        except TRANSIENT_ERRORS as exc:
            if not connection.is_usable():
                connection.close()  # the next query (recording the run) opens a fresh one
            retries = getattr(getattr(celery_task, "request", None), "retries", 0)
            can_retry = celery_task is not None and retries < celery_task.max_retries
            _finish(run, started, JobRun.Status.RETRYING if can_retry else JobRun.Status.FAILED, error=exc)
            if can_retry:
                raise celery_task.retry(exc=exc, countdown=retry_countdown_s(retries)) from exc
            raise
        except Exception as exc:
            _finish(run, started, JobRun.Status.FAILED, error=exc)
            raise
        _finish(run, started, JobRun.Status.SUCCEEDED, result=result)
        return result


def _finish(run: JobRun, started: float, status: str, *, result: dict | None = None, error=None) -> None:
    run.status = status
    run.finished_at = timezone.now()
    run.duration_ms = int((time.perf_counter() - started) * 1000)
    run.result = result or {}
    run.error = "".join(traceback.format_exception(error))[-4000:] if error else ""
    run.save(update_fields=["status", "finished_at", "duration_ms", "result", "error"])
    job_runs_total.labels(job=run.name, status=status).inc()
    job_run_duration_seconds.labels(job=run.name).observe(time.perf_counter() - started)
    log = logger.error if status == JobRun.Status.FAILED else logger.info
    log("job finished", extra={"job": run.name, "status": status, "duration_ms": run.duration_ms})


def _header(request, name: str):
    value = getattr(request, name, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(name)
    return value


def _schedule_slot(request) -> tuple[str, datetime | None]:
    """(schedule, slot start) for a first delivery sent by beat; a retry runs its slot again."""
    if request is None or getattr(request, "retries", 0):
        return "", None
    schedule, slot = _header(request, SCHEDULE_HEADER), _header(request, SLOT_HEADER)
    if not schedule or not slot:
        return "", None
    try:
        return str(schedule)[:200], datetime.fromisoformat(slot)
    except (TypeError, ValueError):
        return "", None


def _claim_run(name: str, celery_id: str, schedule: str, slot_start: datetime | None) -> JobRun | None:
    """The run's JobRun, or None if another message already claimed this schedule's slot."""
    if slot_start is None:
        return JobRun.objects.create(
            name=name, celery_id=celery_id, status=JobRun.Status.RUNNING, started_at=timezone.now()
        )
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO project_jobrun (name, celery_id, status, started_at, result, error, schedule, slot_start)
            VALUES (%s, %s, %s, statement_timestamp(), '{}', '', %s, %s)
            ON CONFLICT (schedule, slot_start) WHERE slot_start IS NOT NULL DO NOTHING
            RETURNING id
            """,
            [name, celery_id, JobRun.Status.RUNNING, schedule, slot_start],
        )
        row = cursor.fetchone()
    if row is not None:
        return JobRun.objects.get(pk=row[0])
    holder = JobRun.objects.filter(schedule=schedule, slot_start=slot_start).values_list("celery_id", flat=True).first()
    if celery_id and holder == celery_id:
        # Our own message again (redelivered after its worker died): run it, outside the slot.
        return _claim_run(name, celery_id, "", None)
    return None


def _record_unrun(name: str, celery_id: str, status: str, *, result: dict | None = None, error: str = "") -> None:
    now = timezone.now()
    JobRun.objects.create(
        name=name, celery_id=celery_id, status=status, started_at=now, finished_at=now, duration_ms=0,
        result=result or {}, error=error,
    )  # fmt: skip
    job_runs_total.labels(job=name, status=status).inc()


def _abandon_earlier_attempts(celery_id: str) -> int:
    """A message delivered again while its earlier run is still `running` lost that run's worker:
    mark it abandoned. Returns how many runs of this message were abandoned so far."""
    if not celery_id:
        return 0
    with transaction.atomic():
        JobRun.objects.filter(celery_id=celery_id, status=JobRun.Status.RUNNING).update(
            status=JobRun.Status.ABANDONED, finished_at=Now(), error="worker lost; the message was delivered again"
        )
        return JobRun.objects.filter(celery_id=celery_id, status=JobRun.Status.ABANDONED).count()


def job_runs_mark_abandoned(*, margin_s: int = 60) -> dict:
    """Runs still `running` past their job's hard time limit lost their worker (a killed worker
    whose message was not redelivered, a worker that never came back): mark them abandoned."""
    from project.celery import app

    abandoned: dict[str, int] = {}
    names = JobRun.objects.filter(status=JobRun.Status.RUNNING).values_list("name", flat=True).distinct()
    for name in list(names):
        task = app.tasks.get(name)
        limit_s = getattr(task, "time_limit", None) or settings.CELERY_TASK_TIME_LIMIT
        cutoff = timezone.now() - timedelta(seconds=limit_s + margin_s)
        count = JobRun.objects.filter(name=name, status=JobRun.Status.RUNNING, started_at__lt=cutoff).update(
            status=JobRun.Status.ABANDONED,
            finished_at=Now(),
            error=f"still running {limit_s + margin_s}s after start: worker lost",
        )
        if count:
            abandoned[name] = count
    return {"abandoned": abandoned}
