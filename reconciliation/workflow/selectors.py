"""Reads of the workflow, every one scoped by tenant ids first."""

from decimal import Decimal

from django.db.models import Count, QuerySet, Sum

from reconciliation import selectors as app_selectors
from reconciliation.models import ReconciliationException, TenantMembership
from reconciliation.workflow.ageing import BUCKET_NAMES, bucket_annotation
from reconciliation.workflow.models import JobSchedule, Period, ScheduledRun


def membership_list(*, tenant_ids: list[int]) -> QuerySet[TenantMembership]:
    return TenantMembership.objects.filter(tenant_id__in=tenant_ids).select_related("user")


def schedule_list(*, tenant_ids: list[int]) -> QuerySet[JobSchedule]:
    return JobSchedule.objects.filter(tenant_id__in=tenant_ids)


def scheduled_runs_of(*, job_id: int) -> QuerySet[ScheduledRun]:
    return ScheduledRun.objects.filter(job_id=job_id)


def period_list(*, tenant_ids: list[int]) -> QuerySet[Period]:
    return Period.objects.filter(tenant_id__in=tenant_ids)


def exception_list(*, tenant_ids: list[int]) -> QuerySet[ReconciliationException]:
    """Exceptions with their age bucket (`age_bucket`, computed in SQL against now())."""
    return app_selectors.exception_list(tenant_ids=tenant_ids).annotate(age_bucket=bucket_annotation())


def exception_ageing(queryset: QuerySet[ReconciliationException]) -> list[dict]:
    """Open exceptions per age bucket (count and amount), every bucket listed, one query."""
    rows = (
        queryset.filter(resolved_at__isnull=True)
        .annotate(bucket=bucket_annotation())
        .values("bucket")
        .annotate(count=Count("id"), amount=Sum("amount"))
    )
    found = {row["bucket"]: row for row in rows}
    return [
        {
            "bucket": name,
            "count": found.get(name, {}).get("count", 0),
            "amount": str(found.get(name, {}).get("amount") or Decimal("0")),
        }
        for name in BUCKET_NAMES
    ]
