"""Reconciliation backlog: executions queued, running and stuck; open exceptions; webhook
deliveries due, failed and dead. Counts are exact up to a cap or read from an index; where no
index serves them (dead deliveries) the planner's row estimate stands in, flagged as such."""

import json
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from reconciliation.models import Execution, ReconciliationException, WebhookDelivery

COUNT_CAP = 100_000


def capped_count(queryset, cap: int = COUNT_CAP) -> dict:
    """count(*) of at most cap + 1 rows: exact below the cap, "more than cap" above it."""
    count = queryset.order_by()[: cap + 1].count()
    return {"count": min(count, cap), "capped": count > cap, "estimated": False}


def estimated_count(queryset) -> dict:
    """The planner's row estimate for the query (EXPLAIN, nothing is read) on a big table; an
    exact (capped) count on a table small enough to read, where an estimate would only blur."""
    sql, params = queryset.order_by().values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [queryset.model._meta.db_table])
        (table_rows,) = cursor.fetchone()
        if table_rows < COUNT_CAP:  # -1 (never analyzed) included
            return capped_count(queryset)
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return {"count": int(plan[0]["Plan"]["Plan Rows"]), "capped": False, "estimated": True}


def stuck_after_s() -> int:
    return settings.RECONCILIATION_STUCK_AFTER_S


def stuck_executions():
    """Running with no heartbeat for RECONCILIATION_STUCK_AFTER_S (the sweeper's definition), or
    never a heartbeat since a start that long ago."""
    cutoff = timezone.now() - timedelta(seconds=stuck_after_s())
    return Execution.objects.filter(status=Execution.Status.RUNNING).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
    )


def reconciliation_backlog() -> dict:
    now = timezone.now()
    executions = {
        "queued": capped_count(Execution.objects.filter(status=Execution.Status.QUEUED)),
        "running": capped_count(Execution.objects.filter(status=Execution.Status.RUNNING)),
        "stuck": capped_count(stuck_executions()),
    }
    stuck = list(
        stuck_executions()
        .order_by("started_at")
        .values("id", "tenant_id", "job_id", "started_at", "heartbeat_at", "attempts")[:20]
    )
    due = Q(status__in=[WebhookDelivery.Status.PENDING, WebhookDelivery.Status.FAILED], next_attempt_at__lte=now)
    deliveries = {
        "due": capped_count(WebhookDelivery.objects.filter(due)),
        # recon_webhook_due_idx holds pending and failed deliveries; dead ones have no index.
        "failed": capped_count(WebhookDelivery.objects.filter(status=WebhookDelivery.Status.FAILED)),
        "dead": estimated_count(WebhookDelivery.objects.filter(status=WebhookDelivery.Status.DEAD)),
    }
    return {
        "executions": executions,
        "stuck_executions": stuck,
        "stuck_after_s": stuck_after_s(),
        "unmatched_open": capped_count(ReconciliationException.objects.filter(resolved_at__isnull=True)),
        "webhook_deliveries": deliveries,
    }
