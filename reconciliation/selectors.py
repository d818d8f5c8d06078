"""Reads of the reconciliation app, every one scoped by tenant ids first."""

from django.conf import settings
from django.core.cache import cache
from django.db.models import Case, F, QuerySet, Value, When

from reconciliation.models import (
    Execution,
    Match,
    ReconciliationException,
    ReconciliationJob,
    Record,
    Tenant,
    WebhookDelivery,
    WebhookEndpoint,
)

JOB_LIST_VERSION_KEY = "recon:jobs:version:{tenant_id}"
SUMMARY_KEY = "recon:summary:{execution_id}"


def tenant_list(*, tenant_ids: list[int]) -> QuerySet[Tenant]:
    return Tenant.objects.filter(pk__in=tenant_ids).order_by("pk")


def job_list(*, tenant_ids: list[int]) -> QuerySet[ReconciliationJob]:
    # Only the columns of the covering index recon_jobs_list_covering (plus the key).
    return ReconciliationJob.objects.filter(tenant_id__in=tenant_ids).only(
        "id", "tenant_id", "name", "is_active", "created_at", "updated_at"
    )


def job_detail(*, tenant_ids: list[int]) -> QuerySet[ReconciliationJob]:
    return ReconciliationJob.objects.filter(tenant_id__in=tenant_ids)


def job_list_cache_version(tenant_ids: list[int]) -> str:
    """A token that changes whenever a job of one of these tenants changes (job_list_invalidate)."""
    keys = [JOB_LIST_VERSION_KEY.format(tenant_id=tenant_id) for tenant_id in tenant_ids]
    versions = cache.get_many(keys)
    return ".".join(str(versions.get(key, 0)) for key in keys)


def job_list_invalidate(tenant_id: int) -> None:
    key = JOB_LIST_VERSION_KEY.format(tenant_id=tenant_id)
    if not cache.add(key, 1, timeout=None):
        try:
            cache.incr(key)
        except ValueError:  # evicted between add and incr
            cache.set(key, 1, timeout=None)


def record_list(*, tenant_ids: list[int]) -> QuerySet[Record]:
    """Records with their match (LEFT JOIN MatchedRecord): `match_id`, and `status` open/matched."""
    return (
        Record.objects.filter(tenant_id__in=tenant_ids)
        .defer("raw")
        .annotate(
            match_id=F("matched__match_id"),
            status=Case(
                When(matched__isnull=False, then=Value(Record.Status.MATCHED)), default=Value(Record.Status.OPEN)
            ),
        )
    )


def execution_list(*, tenant_ids: list[int]) -> QuerySet[Execution]:
    return Execution.objects.filter(tenant_id__in=tenant_ids)


def match_list(*, tenant_ids: list[int]) -> QuerySet[Match]:
    return Match.objects.filter(tenant_id__in=tenant_ids)


def exception_list(*, tenant_ids: list[int]) -> QuerySet[ReconciliationException]:
    return ReconciliationException.objects.filter(tenant_id__in=tenant_ids)


def webhook_endpoint_list(*, tenant_ids: list[int]) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(tenant_id__in=tenant_ids)


def webhook_delivery_list(*, tenant_ids: list[int]) -> QuerySet[WebhookDelivery]:
    return WebhookDelivery.objects.filter(tenant_id__in=tenant_ids)


def execution_summary(*, execution_id: int) -> dict | None:
    """The guide's summary body with the execution's tenant_id (for the caller's tenant check).

    Cached RECONCILIATION_SUMMARY_CACHE_S (60 s) once the execution has finished; while it is
    queued or running, for RECONCILIATION_SUMMARY_LIVE_CACHE_S, so polling sees progress.
    """
    key = SUMMARY_KEY.format(execution_id=execution_id)
    body = cache.get(key)
    if body is None:
        execution = (
            Execution.objects.only(
                "id",
                "tenant_id",
                "job_id",
                "status",
                "dry_run",
                "created_at",
                "started_at",
                "finished_at",
                "passes_done",
                "summary",
            )
            .filter(pk=execution_id)
            .first()
        )
        if execution is None:
            return None
        body = {
            "tenant_id": execution.tenant_id,
            "execution_id": execution.pk,
            "job_id": execution.job_id,
            "status": execution.status,
            "dry_run": execution.dry_run,
            "created_at": execution.created_at,
            "started_at": execution.started_at,
            "finished_at": execution.finished_at,
            "passes_done": execution.passes_done,
            "summary": execution.summary,
        }
        finished = execution.status not in (Execution.Status.QUEUED, Execution.Status.RUNNING)
        ttl_s = settings.RECONCILIATION_SUMMARY_CACHE_S if finished else settings.RECONCILIATION_SUMMARY_LIVE_CACHE_S
        cache.set(key, body, timeout=ttl_s)
    return body
