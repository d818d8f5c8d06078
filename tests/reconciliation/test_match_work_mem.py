"""The matcher's work_mem holds in its own transactions only (SET LOCAL: safe behind PgBouncer)."""

import pytest
from django.db import connection

from reconciliation.engine import jobs, passes
from reconciliation.engine import run as services
from reconciliation.models import Execution
from tests.reconciliation.factories import JobFactory, load

pytestmark = pytest.mark.django_db(transaction=True)  # each pass commits, as in a worker


def show_work_mem() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW work_mem")
        return cursor.fetchone()[0]


def test_each_pass_runs_with_the_configured_work_mem_and_the_session_keeps_its_own(monkeypatch, settings):
    settings.RECONCILIATION_MATCH_WORK_MEM = "48MB"
    job = JobFactory()
    load(job, "left", [("L1", "10.00", "EUR", "2026-03-10", "INV-1", "Acme")])
    load(job, "right", [("R1", "10.00", "EUR", "2026-03-10", "INV-1", "Acme")])
    session_default = show_work_mem()
    seen = []

    def run_pass_and_look(ctx, name):
        result = passes.run_pass(ctx, name)
        seen.append(show_work_mem())
        return result

    monkeypatch.setattr(services, "run_pass", run_pass_and_look)
    execution = Execution.objects.create(tenant_id=job.tenant_id, job=job)
    jobs.run_execution.run_now({"execution_id": execution.pk})

    assert seen and set(seen) == {"48MB"}
    assert session_default != "48MB" and show_work_mem() == session_default
