"""The reconciliation backlog as the cockpit counts it: stuck executions, open exceptions, webhook
deliveries due, failed and dead; on the backlog page, in the API and on /metrics."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from monitoring.selectors.reconciliation import capped_count, reconciliation_backlog
from reconciliation.models import Execution, ReconciliationException, WebhookDelivery, WebhookEndpoint
from tests.reconciliation.factories import JobFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def backlog_rows(settings):
    now = timezone.now()
    stale = now - timedelta(seconds=settings.RECONCILIATION_STUCK_AFTER_S + 60)
    jobs = JobFactory.create_batch(4)
    tenant = jobs[0].tenant
    Execution.objects.create(tenant=tenant, job=jobs[0], status="queued")
    Execution.objects.create(tenant=tenant, job=jobs[1], status="running", started_at=now, heartbeat_at=now)
    stuck = Execution.objects.create(tenant=tenant, job=jobs[2], status="running", started_at=stale, heartbeat_at=stale)
    Execution.objects.create(tenant=tenant, job=jobs[3], status="succeeded", started_at=stale, finished_at=now)
    for record_id, resolved in ((1, None), (2, None), (3, now)):
        ReconciliationException.objects.create(
            tenant_id=tenant.pk,
            job_id=jobs[0].pk,
            record_id=record_id,
            side="left",
            amount=10,
            reason="no_candidate",
            resolved_at=resolved,
        )
    endpoint = WebhookEndpoint.objects.create(tenant=tenant, url="https://example.com/hook", secret="s" * 32)
    for status, next_attempt in (
        ("pending", now - timedelta(seconds=5)),
        ("failed", now - timedelta(seconds=5)),
        ("failed", now + timedelta(hours=1)),
        ("dead", None),
        ("delivered", None),
    ):
        WebhookDelivery.objects.create(
            endpoint=endpoint,
            tenant=tenant,
            event="execution.completed",
            payload={},
            status=status,
            next_attempt_at=next_attempt,
        )
    return stuck


def test_backlog_counts_each_state(backlog_rows):
    backlog = reconciliation_backlog()
    assert {k: v["count"] for k, v in backlog["executions"].items()} == {"queued": 1, "running": 2, "stuck": 1}
    assert [e["id"] for e in backlog["stuck_executions"]] == [backlog_rows.pk]
    assert backlog["unmatched_open"]["count"] == 2
    deliveries = {k: v["count"] for k, v in backlog["webhook_deliveries"].items()}
    assert deliveries == {"due": 2, "failed": 2, "dead": 1}
    assert backlog["webhook_deliveries"]["dead"]["estimated"] is False  # a small table is counted


def test_capped_counts_say_more_than_the_cap():
    JobFactory.create_batch(3)
    from reconciliation.models import ReconciliationJob

    assert capped_count(ReconciliationJob.objects.all(), cap=2) == {"count": 2, "capped": True, "estimated": False}


def test_backlog_page_api_and_metrics_show_the_stuck_execution(backlog_rows, viewer, login, client):
    page = login(viewer).get(reverse("admin:monitoring_backlog")).content.decode()
    assert "Stuck executions" in page and f"<td>{backlog_rows.pk}</td>" in page
    api = login(viewer).get("/api/v1/database/performance/backlog").json()
    assert api["reconciliation"]["executions"]["stuck"]["count"] == 1
    metrics = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    stuck = [s for s in families["opsdeck_reconciliation_executions"].samples if s.labels["status"] == "stuck"]
    assert stuck[0].value == 1
    dead = [s for s in families["opsdeck_webhook_deliveries"].samples if s.labels["status"] == "dead"]
    assert dead[0].value == 1
