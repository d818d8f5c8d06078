"""What happens when a reconciliation execution runs: the body of `reconciliation.run_execution`.

`execution_run` claims the execution, loads the job's open records into the working set, runs
each enabled pass (`engine/passes.py`) in its own transaction, records the exceptions, writes the
summary and report, and queues the `execution.completed` webhook. `executions_requeue_stuck` is
the sweeper that queues again the executions whose worker died.
"""

import json
import logging
import time

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone

from project.db.locks import lease
from project.jobrunner import TRANSIENT_ERRORS, JobSkipped
from project.outbox import outbox_enqueue_many
from reconciliation import metrics
from reconciliation.engine.passes import (
    PASSES,
    ConcurrentChange,
    MatchingContext,
    drop_working_set,
    has_trigram_extension,
    job_totals,
    load_working_set,
    pass_enabled,
    run_pass,
)
from reconciliation.engine.reasons import open_reasons_preview, record_exceptions
from reconciliation.engine.rules import parse_rules
from reconciliation.errors import ReconciliationError
from reconciliation.models import Execution, Report
from reconciliation.selectors import executions_stuck
from reconciliation.webhooks.delivery import webhook_event_queue

logger = logging.getLogger("opsdeck.reconciliation")
# The Celery name of the job that runs an execution (engine/jobs.py registers it under this name;
# queued messages and outbox rows carry it, so it never changes).
RUN_EXECUTION_JOB = "reconciliation.run_execution"
PASS_ATTEMPTS = 3


def execution_run(*, execution_id: int) -> dict:
    """Run (or resume) an execution: the body of the `reconciliation.run_execution` job.

    Idempotent: the execution's lease keeps two workers off one execution, committed passes are
    skipped on a retry, and an execution that already finished is left alone.
    """
    with lease(f"reconciliation.execution:{execution_id}") as acquired:
        if not acquired:
            raise JobSkipped(f"execution {execution_id} is being run by another worker")
        execution = _claim(execution_id)
        if execution is None:
            return {"execution_id": execution_id, "skipped": "not queued or running"}
        started = time.perf_counter()
        try:
            summary = _run_dry(execution) if execution.dry_run else _run_for_real(execution)
        except _Cancelled:
            return {"execution_id": execution_id, "cancelled": True}
        except Exception as error:
            if not _is_transient(error):
                _fail(execution, error)
            raise
        finally:
            drop_working_set(execution_id)
        duration_s = time.perf_counter() - started
        metrics.reconciliation_duration_seconds.observe(duration_s)
        metrics.reconciliations_total.labels(status=Execution.Status.SUCCEEDED).inc()
        metrics.reconciliation_match_rate.set(summary["match_rate"])
        return {"execution_id": execution_id, "match_rate": summary["match_rate"], "duration_s": round(duration_s, 3)}


class _Cancelled(Exception):
    pass


def _claim(execution_id: int) -> Execution | None:
    """Mark the execution running (again, after a crash) and return it; None if it is finished."""
    claimed = Execution.objects.filter(
        pk=execution_id, status__in=[Execution.Status.QUEUED, Execution.Status.RUNNING]
    ).update(status=Execution.Status.RUNNING, heartbeat_at=Now(), attempts=F("attempts") + 1)
    if not claimed:
        return None
    Execution.objects.filter(pk=execution_id, started_at__isnull=True).update(started_at=Now())
    return Execution.objects.select_related("job").get(pk=execution_id)


def _context(execution: Execution) -> MatchingContext:
    return MatchingContext(
        execution=execution, rules=parse_rules(execution.job.rules), has_trigram=has_trigram_extension()
    )


def _check_not_cancelled(execution: Execution) -> None:
    if Execution.objects.filter(pk=execution.pk, status=Execution.Status.CANCELLED).exists():
        raise _Cancelled


def _run_for_real(execution: Execution) -> dict:
    ctx = _context(execution)
    load_working_set(ctx)
    for name in PASSES:
        if name in execution.passes_done or not pass_enabled(ctx.rules, name):
            continue
        _check_not_cancelled(execution)
        for attempt in range(1, PASS_ATTEMPTS + 1):
            try:
                # The pass and the note that it is done commit together: after a crash the
                # retry starts with the next pass, and never half of this one.
                with transaction.atomic():
                    result = run_pass(ctx, name)
                    _record_pass_done(execution.pk, name, result.as_dict())
                break
            except ConcurrentChange:
                if attempt == PASS_ATTEMPTS:
                    raise
                logger.info(
                    "reconciliation pass re-run after a concurrent change",
                    extra={"execution": execution.pk, "pass": name},
                )
                load_working_set(ctx)
        execution.passes_done.append(name)
        after_pass(execution, name)
    _check_not_cancelled(execution)
    with transaction.atomic():
        record_exceptions(ctx)
        execution.refresh_from_db(fields=["summary", "started_at"])
        summary = _summary(execution, job_totals(execution.job_id, execution.tenant_id))
        Execution.objects.filter(pk=execution.pk).update(
            status=Execution.Status.SUCCEEDED, finished_at=Now(), heartbeat_at=Now(), summary=summary, error=""
        )
        Report.objects.update_or_create(
            execution=execution, defaults={"tenant_id": execution.tenant_id, "summary": summary}
        )
        webhook_event_queue(execution_id=execution.pk, event="execution.completed")
    return summary


def _run_dry(execution: Execution) -> dict:
    """Every pass, inside one transaction that is rolled back: the summary of what would happen."""
    ctx = _context(execution)
    passes = {}
    with transaction.atomic():
        load_working_set(ctx)
        for name in PASSES:
            if pass_enabled(ctx.rules, name):
                passes[name] = run_pass(ctx, name).as_dict()
        totals = job_totals(execution.job_id, execution.tenant_id)
        totals["open_by_reason"] = open_reasons_preview(ctx)
        transaction.set_rollback(True)
    execution.refresh_from_db(fields=["summary", "started_at"])
    execution.summary = {"passes": passes}
    summary = _summary(execution, totals) | {"dry_run": True}
    Execution.objects.filter(pk=execution.pk).update(
        status=Execution.Status.SUCCEEDED, finished_at=Now(), heartbeat_at=Now(), summary=summary, error=""
    )
    return summary


def _record_pass_done(execution_id: int, name: str, figures: dict) -> None:
    """Add `name` to passes_done, its figures to summary.passes, and beat the heartbeat."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE reconciliation_execution
            SET passes_done = array_append(passes_done, %s),
                summary = jsonb_set(coalesce(summary, '{}') || jsonb_build_object(
                    'passes', coalesce(summary -> 'passes', '{}')), ARRAY['passes', %s], %s::jsonb),
                heartbeat_at = now()
            WHERE id = %s
            """,
            [name, name, json.dumps(figures), execution_id],
        )


def after_pass(execution: Execution, name: str) -> None:
    """Called after each committed pass (a progress log line; tests interrupt a run here)."""
    logger.info("reconciliation pass committed", extra={"execution": execution.pk, "pass": name})


def _summary(execution: Execution, totals: dict) -> dict:
    finished = timezone.now()
    passes = (execution.summary or {}).get("passes", {})
    return totals | {
        "dry_run": execution.dry_run,
        "passes": passes,
        "matches": {
            "auto": sum(p["auto"] for p in passes.values()),
            "suggested": sum(p["suggested"] for p in passes.values()),
        },
        "duration_ms": int((finished - execution.started_at).total_seconds() * 1000) if execution.started_at else None,
    }


def _fail(execution: Execution, error: Exception) -> None:
    logger.exception("reconciliation execution failed", extra={"execution": execution.pk})
    with transaction.atomic():
        Execution.objects.filter(pk=execution.pk).update(
            status=Execution.Status.FAILED, finished_at=Now(), error=f"{error.__class__.__name__}: {error}"[:4000]
        )
        if not execution.dry_run:
            webhook_event_queue(execution_id=execution.pk, event="execution.failed")
    metrics.reconciliations_total.labels(status=Execution.Status.FAILED).inc()


def _is_transient(error: Exception) -> bool:
    return isinstance(error, TRANSIENT_ERRORS)


@transaction.atomic
def executions_requeue_stuck(*, stuck_after_s: int | None = None, max_attempts: int | None = None) -> dict:
    """Queue again the stuck executions (selectors.executions_stuck: running without heartbeats,
    or queued and never picked up); fail those that have used up their attempts."""
    max_attempts = max_attempts or settings.RECONCILIATION_MAX_ATTEMPTS
    stuck = executions_stuck(stuck_after_s=stuck_after_s).select_for_update(skip_locked=True).order_by("id")
    requeued, failed = [], []
    for execution in stuck:
        if execution.attempts >= max_attempts:
            _fail(execution, ReconciliationError(f"gave up after {execution.attempts} attempts (worker lost)"))
            failed.append(execution.pk)
        else:
            requeued.append(execution.pk)
    outbox_enqueue_many([(RUN_EXECUTION_JOB, {"execution_id": execution_id}, None) for execution_id in requeued])
    return {"requeued": requeued, "failed": failed}
