"""Stuck executions have one definition (reconciliation.selectors.executions_stuck): the sweeper
queues exactly those again, and the monitoring cockpit counts exactly those."""

from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.selectors.reconciliation import reconciliation_backlog
from project.models import OutboxMessage
from reconciliation.engine.run import RUN_EXECUTION_JOB, executions_requeue_stuck
from reconciliation.models import Execution
from tests.reconciliation.factories import JobFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def executions(settings):
    """One execution in each situation, keyed by what it is."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.RECONCILIATION_STUCK_AFTER_S + 60)
    made = {}
    for name, fields in {
        "running, beating": {"status": "running", "started_at": stale, "heartbeat_at": now},
        "running, silent": {"status": "running", "started_at": stale, "heartbeat_at": stale},
        "running, never beat": {"status": "running", "started_at": stale, "heartbeat_at": None},
        "queued just now": {"status": "queued"},
        "queued long ago": {"status": "queued"},
        "succeeded long ago": {"status": "succeeded", "started_at": stale, "heartbeat_at": stale},
    }.items():
        job = JobFactory()
        made[name] = Execution.objects.create(tenant=job.tenant, job=job, **fields)
    Execution.objects.filter(pk=made["queued long ago"].pk).update(created_at=stale)
    return made


STUCK = {"running, silent", "running, never beat", "queued long ago"}


def test_the_sweeper_queues_again_exactly_the_stuck_executions(executions):
    result = executions_requeue_stuck()

    assert set(result["requeued"]) == {executions[name].pk for name in STUCK}
    assert result["failed"] == []
    queued = OutboxMessage.objects.filter(job=RUN_EXECUTION_JOB).values_list("kwargs", flat=True)
    assert sorted(kwargs["execution_id"] for kwargs in queued) == sorted(result["requeued"])


def test_the_sweeper_fails_a_stuck_execution_out_of_attempts(executions, settings):
    silent = executions["running, silent"]
    Execution.objects.filter(pk=silent.pk).update(attempts=settings.RECONCILIATION_MAX_ATTEMPTS)

    result = executions_requeue_stuck()

    assert result["failed"] == [silent.pk]
    silent.refresh_from_db()
    assert silent.status == "failed" and "gave up" in silent.error


def test_monitoring_counts_the_executions_the_sweeper_would_requeue(executions):
    backlog = reconciliation_backlog()

    assert backlog["executions"]["stuck"]["count"] == len(STUCK)
    assert {row["id"] for row in backlog["stuck_executions"]} == {executions[name].pk for name in STUCK}
