"""Writes of the reconciliation app: jobs, executions, and people's review of the matcher's work.

Every function that changes data is atomic and records who did what in ActivityLog. Ingest lives
in `ingest.py`, the matcher's SQL in `matching.py`; this module runs an execution end to end.
"""

import json
import logging
import time
from functools import partial

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone

from project.activity import activity_record, authenticated_user_or_none
from project.db.locks import lease
from project.jobrunner import TRANSIENT_ERRORS, JobSkipped
from project.outbox import outbox_enqueue, outbox_enqueue_many
from reconciliation import metrics
from reconciliation.exceptions import (
    ExecutionActive,
    JobInactive,
    NotReviewable,
    ReconciliationError,
    RecordsNotOpen,
)
from reconciliation.matching import (
    PASSES,
    ConcurrentChange,
    MatchingContext,
    drop_working_set,
    has_trigram_extension,
    job_totals,
    load_working_set,
    open_reasons_preview,
    pass_enabled,
    record_exceptions,
    run_pass,
)
from reconciliation.models import (
    Execution,
    Match,
    MatchedRecord,
    ReconciliationJob,
    Record,
    Report,
    Tenant,
    Unmatched,
)
from reconciliation.rules import parse_rules
from reconciliation.selectors import job_list_invalidate
from reconciliation.webhooks import webhook_event_queue

logger = logging.getLogger("opsdeck.reconciliation")
CATEGORY = "reconciliation"
RUN_EXECUTION_JOB = "reconciliation.run_execution"
PASS_ATTEMPTS = 3


# --- Jobs ----------------------------------------------------------------------------------------


@transaction.atomic
def job_create(*, tenant: Tenant, name: str, rules: dict | None = None, is_active: bool = True, user=None):
    parse_rules(rules or {})
    job = ReconciliationJob.objects.create(tenant=tenant, name=name, rules=rules or {}, is_active=is_active)
    # robust: the write has committed; a failed invalidation (Redis away) is logged, never an error.
    transaction.on_commit(partial(job_list_invalidate, job.tenant_id), robust=True)
    activity_record(
        category=CATEGORY,
        action="job_create",
        user=user,
        entity_type="reconciliation.job",
        entity_id=job.pk,
        metadata={"name": name},
    )
    return job


@transaction.atomic
def job_update(*, job: ReconciliationJob, user=None, **changes) -> ReconciliationJob:
    if "rules" in changes:
        parse_rules(changes["rules"])
    for field, value in changes.items():
        setattr(job, field, value)
    job.save()
    transaction.on_commit(partial(job_list_invalidate, job.tenant_id), robust=True)
    activity_record(
        category=CATEGORY,
        action="job_update",
        user=user,
        entity_type="reconciliation.job",
        entity_id=job.pk,
        metadata={"fields": sorted(changes)},
    )
    return job


# --- Executions ----------------------------------------------------------------------------------


@transaction.atomic
def execution_start(*, job: ReconciliationJob, dry_run: bool = False, user=None) -> Execution:
    """Queue an execution of `job`: the outbox publishes its job after commit (or, with the
    broker away, once it is back), so the execution and its job never diverge."""
    if not job.is_active:
        raise JobInactive(f"Job {job.pk} is inactive; activate it to run it.")
    parse_rules(job.rules)  # rules saved before a validation change must not fail in the worker
    active = Execution.objects.filter(job=job, status__in=[Execution.Status.QUEUED, Execution.Status.RUNNING]).first()
    if active is not None:
        raise ExecutionActive(active.pk)
    try:
        with transaction.atomic():  # a concurrent start loses on the partial unique index
            execution = Execution.objects.create(
                tenant_id=job.tenant_id, job=job, dry_run=dry_run, requested_by=authenticated_user_or_none(user)
            )
    except IntegrityError as error:
        if "recon_exec_one_active_per_job" not in str(error):
            raise
        raise ExecutionActive(Execution.objects.filter(job=job).latest("id").pk) from None
    activity_record(
        category=CATEGORY,
        action="execution_start",
        user=user,
        entity_type="reconciliation.execution",
        entity_id=execution.pk,
        metadata={"job_id": job.pk, "dry_run": dry_run},
    )
    outbox_enqueue(RUN_EXECUTION_JOB, kwargs={"execution_id": execution.pk})
    return execution


@transaction.atomic
def execution_cancel(*, execution: Execution, user=None) -> Execution:
    """Cancel a queued or running execution; a running one stops before its next pass (passes
    already committed stay)."""
    updated = Execution.objects.filter(
        pk=execution.pk, status__in=[Execution.Status.QUEUED, Execution.Status.RUNNING]
    ).update(status=Execution.Status.CANCELLED, finished_at=Now())
    if not updated:
        raise NotReviewable(f"Execution {execution.pk} has already finished.")
    activity_record(
        category=CATEGORY,
        action="execution_cancel",
        user=user,
        entity_type="reconciliation.execution",
        entity_id=execution.pk,
    )
    execution.refresh_from_db()
    return execution


def execution_run(*, execution_id: int) -> dict:
    """Run (or resume) an execution: the body of the `reconciliation.run_execution` job.

    Idempotent: the advisory lock keeps two workers off one execution, committed passes are
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
            drop_working_set()
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
    load_working_set(execution.job_id)
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
                load_working_set(execution.job_id)
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
        load_working_set(execution.job_id)
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
    """Queue again the running executions whose worker stopped sending heartbeats (it died);
    fail those that have used up their attempts. Queued ones nobody picked up are queued again."""
    stuck_after_s = stuck_after_s or settings.RECONCILIATION_STUCK_AFTER_S
    max_attempts = max_attempts or settings.RECONCILIATION_MAX_ATTEMPTS
    cutoff = timezone.now() - timezone.timedelta(seconds=stuck_after_s)
    stuck = list(
        Execution.objects.select_for_update(skip_locked=True).filter(
            status=Execution.Status.RUNNING, heartbeat_at__lt=cutoff
        )
    ) + list(
        Execution.objects.select_for_update(skip_locked=True).filter(
            status=Execution.Status.QUEUED, created_at__lt=cutoff
        )
    )
    requeued, failed = [], []
    for execution in stuck:
        if execution.attempts >= max_attempts:
            _fail(execution, ReconciliationError(f"gave up after {execution.attempts} attempts (worker lost)"))
            failed.append(execution.pk)
        else:
            requeued.append(execution.pk)
    outbox_enqueue_many([(RUN_EXECUTION_JOB, {"execution_id": execution_id}, None) for execution_id in requeued])
    return {"requeued": requeued, "failed": failed}


# --- Review --------------------------------------------------------------------------------------


def _locked_match(match_id: int, tenant_ids) -> Match:
    match = Match.objects.select_for_update().filter(id=match_id, tenant_id__in=tenant_ids).first()
    if match is None:
        raise Match.DoesNotExist(f"No match {match_id}.")
    return match


def _review(match: Match, *, status: str, user, note: str) -> None:
    Match.objects.filter(id=match.id, matched_at=match.matched_at).update(
        status=status, reviewed_by_id=getattr(user, "pk", None), reviewed_at=Now(), note=note
    )


def _release_records(match: Match) -> None:
    MatchedRecord.objects.filter(record_id__in=[*match.left_ids, *match.right_ids], match_id=match.id).delete()


def _decide(match_id: int, tenant_ids, *, user, note: str, action: str, allowed: tuple, status: str) -> Match:
    """Lock the match, check its state, record the decision (and, unless confirming, reopen its
    records into the exceptions queue), audit it."""
    match = _locked_match(match_id, tenant_ids)
    if match.status not in allowed:
        raise NotReviewable(f"Match {match_id} is {match.status}; {action} needs one that is {' or '.join(allowed)}.")
    _review(match, status=status, user=user, note=note)
    if status == Match.Status.REJECTED:
        _release_records(match)
        _open_exceptions(match, reason=Unmatched.Reason.REJECTED)
    activity_record(
        category=CATEGORY,
        action=action,
        user=user,
        entity_type="reconciliation.match",
        entity_id=match_id,
        metadata={"job_id": match.job_id, "was": match.status},
    )
    return Match.objects.get(id=match_id)


UNDECIDED = (Match.Status.SUGGESTED, Match.Status.AUTO)


@transaction.atomic
def match_confirm(*, match_id: int, tenant_ids, user=None, note: str = "") -> Match:
    return _decide(match_id, tenant_ids, user=user, note=note, action="match_confirm", allowed=UNDECIDED,
                   status=Match.Status.CONFIRMED)  # fmt: skip


@transaction.atomic
def match_reject(*, match_id: int, tenant_ids, user=None, note: str = "") -> Match:
    """A person says these records do not belong together: the match is kept as rejected (it
    counts in the accuracy figures), its records reopen and enter the exceptions queue."""
    return _decide(match_id, tenant_ids, user=user, note=note, action="match_reject", allowed=UNDECIDED,
                   status=Match.Status.REJECTED)  # fmt: skip


@transaction.atomic
def match_unmatch(*, match_id: int, tenant_ids, user=None, note: str = "") -> Match:
    """Undo a live match, confirmed ones included: a rejection of a match already accepted."""
    return _decide(match_id, tenant_ids, user=user, note=note or "unmatched", action="match_unmatch",
                   allowed=(*UNDECIDED, Match.Status.CONFIRMED), status=Match.Status.REJECTED)  # fmt: skip


def _open_exceptions(match: Match, *, reason: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO reconciliation_unmatched
                (created_at, tenant_id, job_id, execution_id, record_id, side, amount, reason, resolution)
            SELECT now(), r.tenant_id, r.job_id, %s, r.id, r.side, r.amount, %s, ''
            FROM reconciliation_record r
            WHERE r.id = ANY (%s) AND NOT EXISTS (
                SELECT 1 FROM reconciliation_unmatched u WHERE u.record_id = r.id AND u.resolved_at IS NULL)
            """,
            [match.execution_id, reason, list(match.left_ids) + list(match.right_ids)],
        )


@transaction.atomic
def match_manual(*, left_ids: list[int], right_ids: list[int], tenant_ids, user=None, note: str = "") -> Match:
    """A person matches open records by hand (one or more per side, same job and tenant)."""
    if not left_ids or not right_ids:
        raise ReconciliationError("Give at least one left and one right record.")
    ids = sorted(set(left_ids) | set(right_ids))
    records = {
        record.pk: record
        for record in Record.objects.select_for_update().filter(pk__in=ids, tenant_id__in=tenant_ids).order_by("pk")
    }
    missing = [record_id for record_id in ids if record_id not in records]
    if missing:
        raise Record.DoesNotExist(f"No records {missing}.")
    jobs = {record.job_id for record in records.values()}
    if len(jobs) != 1:
        raise ReconciliationError("All records of a match must belong to one job.")
    wrong_side = [i for i in left_ids if records[i].side != "left"] + [
        i for i in right_ids if records[i].side != "right"
    ]
    if wrong_side:
        raise ReconciliationError(f"Records on the wrong side: {wrong_side}.")
    # The records are locked; a matcher pass that wants one of them meanwhile is redone.
    not_open = sorted(MatchedRecord.objects.filter(record_id__in=ids).values_list("record_id", flat=True))
    if not_open:
        raise RecordsNotOpen(not_open)
    first = records[ids[0]]
    match = Match.objects.create(
        tenant_id=first.tenant_id,
        job_id=first.job_id,
        execution_id=None,
        pass_name=Match.Pass.MANUAL,
        status=Match.Status.CONFIRMED,
        confidence=1,
        left_ids=sorted(set(left_ids)),
        right_ids=sorted(set(right_ids)),
        left_amount=sum(records[i].amount for i in set(left_ids)),
        right_amount=sum(records[i].amount for i in set(right_ids)),
        reviewed_by_id=getattr(user, "pk", None),
        reviewed_at=timezone.now(),
        note=note,
    )
    MatchedRecord.objects.bulk_create([MatchedRecord(record_id=record_id, match_id=match.id) for record_id in ids])
    Unmatched.objects.filter(record_id__in=ids, resolved_at__isnull=True).update(
        resolved_at=Now(), resolved_by_id=getattr(user, "pk", None), resolution=f"matched by hand (match {match.id})"
    )
    activity_record(
        category=CATEGORY,
        action="match_manual",
        user=user,
        entity_type="reconciliation.match",
        entity_id=match.id,
        metadata={"job_id": first.job_id, "left_ids": left_ids, "right_ids": right_ids},
    )
    return match


@transaction.atomic
def unmatched_resolve(*, unmatched_id: int, tenant_ids, note: str, user=None) -> Unmatched:
    """Close an exception with a note (written off, booked elsewhere, ...); the record stays open."""
    if not note.strip():
        raise ReconciliationError("A resolution note is required.")
    exception = Unmatched.objects.select_for_update().filter(id=unmatched_id, tenant_id__in=tenant_ids).first()
    if exception is None:
        raise Unmatched.DoesNotExist(f"No exception {unmatched_id}.")
    if exception.resolved_at is not None:
        raise NotReviewable(f"Exception {unmatched_id} is already resolved.")
    Unmatched.objects.filter(id=exception.id, created_at=exception.created_at).update(
        resolved_at=Now(), resolved_by_id=getattr(user, "pk", None), resolution=note.strip()
    )
    activity_record(
        category=CATEGORY,
        action="unmatched_resolve",
        user=user,
        entity_type="reconciliation.unmatched",
        entity_id=unmatched_id,
        metadata={"record_id": exception.record_id, "note": note.strip()[:500]},
    )
    return Unmatched.objects.get(id=unmatched_id)
