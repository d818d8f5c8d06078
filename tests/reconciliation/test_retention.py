"""Reconciliation under retention (reconciliation/retention.py): finished executions and webhook
deliveries are archived, never deleted; what is still in use stays."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from project.retention import ARCHIVE, apply_retention, registered_policies
from reconciliation.models import Execution, Report, WebhookDelivery, WebhookEndpoint
from tests.reconciliation.factories import JobFactory

pytestmark = pytest.mark.django_db


def _archived(table: str, ids) -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id FROM archive.{table} WHERE id = ANY(%s)", [list(ids)])
        return {row[0] for row in cursor.fetchall()}


def _execution(job, status: str, days_ago: int | None) -> Execution:
    finished = timezone.now() - timedelta(days=days_ago) if days_ago is not None else None
    return Execution.objects.create(tenant_id=job.tenant_id, job=job, status=status, finished_at=finished)


def test_reconciliation_tables_are_registered_as_archived_business_records():
    policies = {policy.model: policy for policy in registered_policies()}
    assert policies["reconciliation.Execution"].business and policies["reconciliation.Report"].business
    assert {policies[m].mode for m in ("reconciliation.Execution", "reconciliation.WebhookDelivery")} == {ARCHIVE}


def test_finished_executions_are_archived_after_90_days_but_not_while_their_report_is_kept():
    job = JobFactory()
    old_failed = _execution(job, "failed", 91)
    old_with_report = _execution(job, "succeeded", 120)
    Report.objects.create(execution=old_with_report, tenant_id=job.tenant_id)
    recent = _execution(job, "cancelled", 10)
    running = Execution.objects.create(tenant_id=job.tenant_id, job=JobFactory(tenant=job.tenant), status="running")

    result = apply_retention()["tables"]["reconciliation.Execution"]

    assert result["error"] == "" and result["rows"] == 1
    assert set(Execution.objects.filter(tenant_id=job.tenant_id).values_list("pk", flat=True)) == {
        old_with_report.pk,
        recent.pk,
        running.pk,
    }
    assert _archived("reconciliation_execution", [old_failed.pk, old_with_report.pk]) == {old_failed.pk}


def test_finished_webhook_deliveries_are_archived_after_30_days_and_retries_stay():
    job = JobFactory()
    endpoint = WebhookEndpoint.objects.create(tenant=job.tenant, url="https://hooks.example.com/a", secret="s")

    def delivery(status: str, days_ago: int) -> WebhookDelivery:
        row = WebhookDelivery.objects.create(endpoint=endpoint, tenant=job.tenant, event="e", payload={}, status=status)
        WebhookDelivery.objects.filter(pk=row.pk).update(created_at=timezone.now() - timedelta(days=days_ago))
        return row

    delivered, dead, failing = delivery("delivered", 31), delivery("dead", 40), delivery("failed", 40)
    assert apply_retention()["tables"]["reconciliation.WebhookDelivery"]["rows"] == 2
    assert set(WebhookDelivery.objects.filter(endpoint=endpoint).values_list("pk", flat=True)) == {failing.pk}
    assert _archived("reconciliation_webhookdelivery", [delivered.pk, dead.pk, failing.pk]) == {delivered.pk, dead.pk}
