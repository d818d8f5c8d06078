"""Reads of the review queues: suggested matches, open exceptions, an exception's candidates.

Both queues read a tenant's oldest first, in (tenant_id, id) order: the order of their partial
indexes (recon_match_review_idx, recon_unm_open_idx), so a keyset page is an index range scan,
filtered by tenant or not. Staff work across tenants; the API scopes by tenant before these.
"""

from datetime import timedelta
from decimal import Decimal

from django.db.models import F, QuerySet
from django.db.models.functions import Abs

from reconciliation.engine.rules import MatchingRules
from reconciliation.models import Match, ReconciliationException, ReconciliationJob, Record
from reconciliation.workflow.ageing import bucket_condition

QUEUE_ORDERING = ("tenant_id", "id")  # a tenant's oldest first
RECORD_COLUMNS = ("id", "external_id", "side", "amount", "currency", "booked_on", "reference", "counterparty")
_SCOPES = (("tenant", "tenant_id"), ("job", "job_id"), ("execution", "execution_id"))


def _scoped(queryset: QuerySet, filters: dict) -> QuerySet:
    for name, column in _SCOPES:
        if filters.get(name):
            queryset = queryset.filter(**{column: filters[name]})
    return queryset


def _within(queryset: QuerySet, column: str, low, high) -> QuerySet:
    if low is not None:
        queryset = queryset.filter(**{f"{column}__gte": low})
    if high is not None:
        queryset = queryset.filter(**{f"{column}__lte": high})
    return queryset


def review_queue(**filters) -> QuerySet[Match]:
    """Suggested matches; filters: tenant, job, execution, pass_name, confidence_min/max."""
    queryset = _scoped(Match.objects.filter(status=Match.Status.SUGGESTED), filters)
    if filters.get("pass_name"):
        queryset = queryset.filter(pass_name=filters["pass_name"])
    return _within(queryset, "confidence", filters.get("confidence_min"), filters.get("confidence_max"))


def exceptions_queue(**filters) -> QuerySet[ReconciliationException]:
    """Open exceptions; filters: tenant, job, execution, reason, side, amount_min/max, age (bucket),
    assignee (user id)."""
    queryset = _scoped(ReconciliationException.objects.filter(resolved_at__isnull=True), filters)
    for name in ("reason", "side"):
        if filters.get(name):
            queryset = queryset.filter(**{name: filters[name]})
    if filters.get("age"):
        queryset = queryset.filter(bucket_condition(filters["age"]))
    if filters.get("assignee"):
        queryset = queryset.filter(assigned_to_id=filters["assignee"])
    return _within(queryset, "amount", filters.get("amount_min"), filters.get("amount_max"))


def records_by_id(ids) -> dict[int, Record]:
    """The records a queue page shows, in one query (the columns its rows print)."""
    if not ids:
        return {}
    return {record.pk: record for record in Record.objects.filter(pk__in=sorted(ids)).only(*RECORD_COLUMNS)}


def jobs_by_id(ids) -> dict[int, ReconciliationJob]:
    """The jobs (and tenants' names) a queue page shows, in one query."""
    if not ids:
        return {}
    return {
        job.pk: job
        for job in ReconciliationJob.objects.filter(pk__in=sorted(ids))
        .select_related("tenant")
        .only("id", "name", "tenant_id", "tenant__name")
    }


def exception_record(exception: ReconciliationException) -> Record | None:
    """The exception's record with its job and tenant (not its raw columns)."""
    return Record.objects.select_related("job", "tenant").defer("raw").filter(pk=exception.record_id).first()


def record_is_matched(record_id: int) -> bool:
    return Record.objects.filter(pk=record_id, matched__isnull=False).exists()


def exception_candidates(record: Record, rules: MatchingRules, *, limit: int) -> tuple[Decimal, QuerySet[Record]]:
    """Open records of the other side within the job's amount drift and date window, closest
    amount first, and the drift: an index range scan of recon_record_candidate_idx (job, side,
    currency, amount), the open check an anti-join on MatchedRecord's primary key."""
    drift = rules.tolerance.drift(record.amount)
    window = timedelta(days=rules.date_window_days)
    other = Record.Side.RIGHT if record.side == Record.Side.LEFT else Record.Side.LEFT
    queryset = (
        Record.objects.filter(
            job_id=record.job_id,
            side=other,
            currency=record.currency,
            amount__gte=record.amount - drift,
            amount__lte=record.amount + drift,
            booked_on__gte=record.booked_on - window,
            booked_on__lte=record.booked_on + window,
            matched__isnull=True,
        )
        .only(*RECORD_COLUMNS)
        .alias(distance=Abs(F("amount") - record.amount))
        .order_by("distance", "id")[:limit]
    )
    return drift, queryset
