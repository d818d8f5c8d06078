"""Run by `make test-pgbouncer` (skipped elsewhere): PgBouncer really pools per transaction, and
what must hold across transactions (job leases, a reconciliation run) does through it."""

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from project.db.locks import lease
from reconciliation import jobs
from reconciliation.models import Execution
from tests.reconciliation.factories import JobFactory, load

pytestmark = pytest.mark.skipif(
    not (settings.DB_BEHIND_PGBOUNCER and settings.PGBOUNCER_ADMIN_URL),
    reason="runs through PgBouncer only: make test-pgbouncer",
)


def admin_show(what: str) -> list[dict]:
    with psycopg.connect(settings.PGBOUNCER_ADMIN_URL, autocommit=True) as admin:
        cursor = admin.execute(f"SHOW {what}")
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def open_server_connections(count: int) -> None:
    """Make PgBouncer open `count` server connections: as many clients in a transaction at once."""
    db = settings.DATABASES["default"]
    clients = [
        psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"], prepare_threshold=None)
        for _ in range(count)
    ]
    try:
        pids = {client.execute("SELECT pg_backend_pid()").fetchone()[0] for client in clients}
        assert len(pids) == count
        for client in clients:
            client.commit()  # a client gone mid-transaction would take its server connection along
    finally:
        for client in clients:
            client.close()


def backend_pids_of_consecutive_transactions(count: int) -> list[int]:
    with connection.cursor() as cursor:
        pids = []
        for _ in range(count):
            cursor.execute("SELECT pg_backend_pid()")
            pids.append(cursor.fetchone()[0])
    return pids


def test_pgbouncer_pools_per_transaction():
    config = {row["key"]: row["value"] for row in admin_show("CONFIG")}
    assert config["pool_mode"] == "transaction"


@pytest.mark.django_db(transaction=True)
def test_one_clients_consecutive_transactions_land_on_different_server_connections():
    # What makes this rig a real test: session state (an advisory lock, a temp table) taken in
    # one transaction is gone, or on another connection, in the next.
    open_server_connections(3)
    assert len(set(backend_pids_of_consecutive_transactions(6))) > 1


@pytest.mark.django_db(transaction=True)
def test_a_lease_holds_across_transactions_on_other_server_connections():
    open_server_connections(3)
    with lease("job:tests.through-pgbouncer") as acquired:
        assert acquired is True
        for _ in range(4):  # each claim is its own transaction, on the next server connection
            with lease("job:tests.through-pgbouncer") as again:
                assert again is False
    with lease("job:tests.through-pgbouncer") as acquired:
        assert acquired is True


@pytest.mark.django_db(transaction=True)
def test_a_reconciliation_run_succeeds_through_pgbouncer():
    # The matcher's working set is per-execution unlogged tables, not session temp tables: each
    # pass may land on another server connection.
    job = JobFactory(rules={"date_window_days": 2})
    load(job, "left", [("L1", "100.00", "EUR", "2026-03-01", "INV-2026-001")])
    load(job, "right", [("R1", "100.00", "EUR", "2026-03-02", "INV 2026 001")])
    execution = Execution.objects.create(tenant_id=job.tenant_id, job=job)
    open_server_connections(3)

    jobs.run_execution.run_now({"execution_id": execution.pk})

    execution.refresh_from_db()
    assert execution.status == Execution.Status.SUCCEEDED, execution.error
    assert execution.summary["passes"]["exact"]["auto"] == 1


@pytest.mark.django_db(transaction=True)
def test_a_cockpit_request_leaves_no_session_setting_on_any_server_connection(client):
    # A session-level SET lands on one server connection and its reset on another: the setting
    # would stay behind for whichever client gets that connection next.
    from django.urls import reverse

    from tests.factories import UserFactory

    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    open_server_connections(3)
    assert client.get(reverse("admin:monitoring_pool")).status_code == 200
    with connection.cursor() as cursor:
        settings_seen = set()
        for _ in range(8):
            cursor.execute("SELECT current_setting('lock_timeout'), current_setting('statement_timeout')")
            settings_seen.add(cursor.fetchone())
    assert settings_seen == {("0", "0")}


def test_maintenance_actions_that_need_session_timeouts_refuse_to_run_through_pgbouncer():
    from monitoring.actions import ActionRefused, session_timeouts

    with pytest.raises(ActionRefused, match="direct PostgreSQL connection"), session_timeouts():
        pytest.fail("a VACUUM here would run without its timeouts")
