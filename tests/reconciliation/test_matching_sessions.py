"""The matcher keeps no state in a database session (PgBouncer in transaction mode, issue 13).

Consecutive transactions of one execution may run on different server sessions, so nothing
may live in a session temp table across a commit: the working set is per-execution UNLOGGED
tables, a pass's scratch tables are dropped at its commit. A killed worker leaves its working
tables behind; the resume rebuilds them and finishes with the same result.
"""

import pytest
from django.db import connection

from reconciliation.engine import jobs
from reconciliation.engine import run as services
from reconciliation.models import Execution, Match, ReconciliationException, Record
from tests.reconciliation.factories import JobFactory, load

pytestmark = pytest.mark.django_db(transaction=True)

LEFT = [
    ("L1", "100.00", "EUR", "2026-03-10", "INV-1", "Acme"),
    ("L2", "200.00", "EUR", "2026-03-10", "INV-2", "Beta"),
    ("L3", "300.00", "EUR", "2026-03-10", "INV-3", "Gamma"),
    ("L4", "99.00", "EUR", "2026-03-10", "ZZ", "Nobody"),
]
RIGHT = [
    ("R1", "100.00", "EUR", "2026-03-11", "INV-1", "Acme"),
    ("R2", "200.50", "EUR", "2026-03-10", "INV-2", "Beta"),
    ("R3a", "100.00", "EUR", "2026-03-10", "INV-3", "Gamma"),
    ("R3b", "200.00", "EUR", "2026-03-10", "INV-3", "Gamma"),
]


class SimulatedWorkerDeath(BaseException):
    """Not an Exception: like a SIGKILL, nothing in the job gets to clean up or mark it failed."""


def outcome(job) -> tuple[set, set]:
    external = dict(Record.objects.filter(job=job).values_list("id", "external_id"))
    matches = {
        (tuple(sorted(external[i] for i in m.left_ids)), tuple(sorted(external[i] for i in m.right_ids)),
         m.pass_name, m.status, m.confidence)
        for m in Match.objects.filter(job_id=job.pk)
    }  # fmt: skip
    exceptions = {
        (external[record_id], reason)
        for record_id, reason in ReconciliationException.objects.filter(job_id=job.pk).values_list(
            "record_id", "reason"
        )
    }
    return matches, exceptions


def run(job) -> Execution:
    execution = Execution.objects.create(tenant_id=job.tenant_id, job=job)
    jobs.run_execution.run_now({"execution_id": execution.pk})
    execution.refresh_from_db()
    return execution


def work_tables_left() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname FROM pg_class WHERE relname LIKE 'recon\\_work\\_%%' AND relkind = 'r'")
        return [name for (name,) in cursor.fetchall()]


def loaded_job():
    job = JobFactory()
    load(job, "left", LEFT)
    load(job, "right", RIGHT)
    return job


def test_every_pass_may_run_on_a_new_database_session(monkeypatch):
    reference = loaded_job()
    run(reference)
    job = loaded_job()
    # A new server session after every committed pass, as PgBouncer may hand out.
    monkeypatch.setattr(services, "after_pass", lambda execution, name: connection.close())

    execution = run(job)

    assert execution.status == Execution.Status.SUCCEEDED
    assert outcome(job) == outcome(reference)
    assert work_tables_left() == []


def test_a_worker_killed_mid_run_leaves_its_working_tables_and_the_resume_gives_the_same_result(monkeypatch):
    reference = loaded_job()
    run(reference)
    job = loaded_job()

    def die_after_exact(execution, name):
        if name == "exact":
            raise SimulatedWorkerDeath

    with monkeypatch.context() as killed:
        killed.setattr(services, "after_pass", die_after_exact)
        killed.setattr(services, "drop_working_set", lambda execution_id: None)  # SIGKILL: no cleanup
        execution = Execution.objects.create(tenant_id=job.tenant_id, job=job)
        with pytest.raises(SimulatedWorkerDeath):
            jobs.run_execution.run_now({"execution_id": execution.pk})
    assert work_tables_left(), "the killed worker's tables stay behind"

    jobs.run_execution.run_now({"execution_id": execution.pk})

    execution.refresh_from_db()
    assert execution.status == Execution.Status.SUCCEEDED
    assert outcome(job) == outcome(reference)
    assert work_tables_left() == []
