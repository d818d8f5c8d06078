"""Writes that set up and start reconciliation work: jobs (their rules) and executions.

What happens once an execution runs is in `engine/run.py`; its Celery job in `engine/jobs.py`.
"""

from functools import partial

from django.db import IntegrityError, transaction
from django.db.models.functions import Now

from project.activity import activity_record, authenticated_user_or_none
from project.outbox import outbox_enqueue
from reconciliation.engine.rules import parse_rules
from reconciliation.engine.run import RUN_EXECUTION_JOB
from reconciliation.errors import ExecutionActive, JobInactive, NotReviewable
from reconciliation.models import Execution, ReconciliationJob, Tenant
from reconciliation.selectors import job_list_invalidate

CATEGORY = "reconciliation"


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
        tenant_id=job.tenant_id,
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
        tenant_id=job.tenant_id,
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
        tenant_id=job.tenant_id,
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
        tenant_id=execution.tenant_id,
    )
    execution.refresh_from_db()
    return execution
