"""Maintenance actions: superuser only, confirmed by POST, run as monitoring.maintenance_* jobs
(eagerly here), with the request and the outcome in ActivityLog."""

import re
import threading
import time

import psycopg
import pytest
from django.db import connection
from django.urls import reverse

import project.celery
from monitoring import actions
from project.models import ActivityLog, JobRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def run_on_commit(django_capture_on_commit_callbacks):
    # Actions are queued through the outbox after commit; the test's transaction never commits.
    return django_capture_on_commit_callbacks


@pytest.fixture
def eager_celery(monkeypatch):
    monkeypatch.setitem(project.celery.app.conf, "task_always_eager", True)


def table_oid(name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::regclass::oid", [name])
        return cursor.fetchone()[0]


def action_url(name: str) -> str:
    return reverse("admin:monitoring_action", args=[name])


def test_a_viewer_who_is_not_superuser_can_neither_see_nor_run_actions(viewer, login):
    client = login(viewer)
    oid = table_oid("tasks_task")
    assert client.get(action_url("vacuum"), {"oid": oid}).status_code == 403
    assert client.post(action_url("vacuum"), {"oid": oid}).status_code == 403
    assert not JobRun.objects.filter(name="monitoring.maintenance_vacuum").exists()


def test_the_confirmation_page_names_the_object_from_the_catalog(superuser, login):
    response = login(superuser).get(action_url("vacuum"), {"oid": table_oid("tasks_task")})
    assert response.status_code == 200
    body = response.content.decode()
    assert "tasks_task" in body and 'method="post"' in body and "Yes, VACUUM (ANALYZE)" in body


def test_unknown_objects_and_bad_parameters_are_404_not_500(superuser, login):
    client = login(superuser)
    assert client.get(action_url("vacuum"), {"oid": "not-a-number"}).status_code == 404
    assert client.get(action_url("vacuum"), {"oid": 1}).status_code == 404  # no such table
    assert client.get(action_url("no_such_action")).status_code == 404
    assert client.get(action_url("cancel_backend"), {"pid": 999_999_999}).status_code == 404


@pytest.mark.django_db(transaction=True)
def test_vacuum_runs_as_a_maintenance_job_and_is_audited(superuser, login, eager_celery):
    response = login(superuser).post(action_url("vacuum"), {"oid": table_oid("tasks_task")})
    assert response.status_code == 302
    celery_id = response["Location"].rstrip("/").rsplit("/", 1)[1]
    run = JobRun.objects.get(celery_id=celery_id)
    assert run.name == "monitoring.maintenance_vacuum"
    assert run.status == JobRun.Status.SUCCEEDED, run.error
    acts = {act.action: act for act in ActivityLog.objects.filter(category="monitoring")}
    assert acts["vacuum_requested"].user_id == superuser.pk
    assert acts["vacuum_analyze"].user_id == superuser.pk
    assert acts["vacuum_analyze"].metadata["outcome"] == "done"
    assert acts["vacuum_analyze"].entity_id == "public.tasks_task"
    with connection.cursor() as cursor:
        cursor.execute("SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'tasks_task'")
        assert cursor.fetchone()[0]
    page = login(superuser).get(response["Location"]).content.decode()
    assert "succeeded" in page


@pytest.mark.django_db(transaction=True)
def test_cancel_backend_stops_a_running_query(superuser, login, eager_celery):
    settings_dict = connection.settings_dict
    other = psycopg.connect(
        host=settings_dict["HOST"], dbname=settings_dict["NAME"], user=settings_dict["USER"], autocommit=True
    )
    pid = other.info.backend_pid
    outcome = {}

    def sleep():
        try:
            other.execute("SELECT pg_sleep(30)")
            outcome["error"] = None
        except psycopg.errors.QueryCanceled as exc:
            outcome["error"] = exc

    sleeper = threading.Thread(target=sleep)
    sleeper.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until the sleep shows as active
            with connection.cursor() as cursor:
                cursor.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", [pid])
                if cursor.fetchone()[0] == "active":
                    break
            time.sleep(0.05)
        response = login(superuser).post(action_url("cancel_backend"), {"pid": pid})
        assert response.status_code == 302
        sleeper.join(timeout=10)
        assert isinstance(outcome["error"], psycopg.errors.QueryCanceled)
        act = ActivityLog.objects.get(category="monitoring", action="cancel_backend")
        assert act.metadata["pid"] == pid and act.metadata["signalled"] is True
        assert act.user_id == superuser.pk
    finally:
        other.close()


def _a_statement_queryid() -> int:
    """The queryid of a statement this test runs. pg_stat_statements is shared by every database
    of the server (5,000 entries): under other test runs a fresh, once-called entry can be evicted
    at once, so it is run a few times and looked up again until it is there."""
    deadline = time.monotonic() + 10
    with connection.cursor() as cursor:
        while True:
            for _ in range(5):
                cursor.execute("SELECT count(*) FROM tasks_task WHERE priority = %s", ["high"])
            cursor.execute(
                "SELECT queryid FROM pg_stat_statements WHERE query LIKE %s "
                "AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1",
                ["SELECT count(*) FROM tasks_task WHERE priority = $1%"],
            )
            row = cursor.fetchone()
            if row is not None or time.monotonic() > deadline:
                assert row is not None, "the statement never showed in pg_stat_statements"
                return row[0]


@pytest.mark.usefixtures("with_pg_stat_statements")
def test_explain_plans_a_parameterised_statement_generically():
    result = actions.explain(queryid=_a_statement_queryid())
    assert result["plan"][0]["Plan"]["Node Type"] in {"Aggregate", "Finalize Aggregate"}


@pytest.mark.usefixtures("with_pg_stat_statements")
def test_explain_analyze_binds_the_given_values_in_a_rolled_back_read_only_transaction():
    result = actions.explain(queryid=_a_statement_queryid(), analyze=True, parameters=["high"])
    plan = result["plan"][0]
    assert "Execution Time" in plan
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'opsdeck_explain_%%'")
        assert cursor.fetchone()[0] == 0  # deallocated: the pooled connection keeps nothing


@pytest.mark.usefixtures("with_pg_stat_statements")
def test_explain_analyze_refuses_a_wrong_number_of_values():
    with pytest.raises(actions.ActionRefused, match="1 parameters; 0 values"):
        actions.explain(queryid=_a_statement_queryid(), analyze=True, parameters=[])


def test_drop_invalid_index_refuses_a_valid_index():
    with pytest.raises(actions.ActionRefused, match="only invalid indexes"):
        actions.drop_invalid_index(oid=table_oid("task_priority_idx"))


def test_run_now_stores_the_beat_job_for_its_queue_in_the_outbox_and_is_audited(superuser, login):
    from django_celery_beat.models import PeriodicTask

    from project.models import OutboxMessage

    # The test transaction never commits, so nothing reaches the broker (under `make run` it is
    # shared, and a worker would pick the job up); the outbox row is what would be published.
    task = PeriodicTask.objects.get(task="project.maintain_partitions")
    client = login(superuser)
    assert "project.maintain_partitions" in client.get(action_url("run_job"), {"task": task.pk}).content.decode()
    response = client.post(action_url("run_job"), {"task": task.pk})
    assert response.status_code == 302
    message = OutboxMessage.objects.get()
    assert (message.job, message.kwargs, message.queue) == ("project.maintain_partitions", {}, "maintenance")
    act = ActivityLog.objects.get(category="monitoring", action="run_job_requested")
    assert act.user_id == superuser.pk and act.entity_id == str(message.idempotency_key)
    assert response["Location"].endswith(f"/{message.idempotency_key}/")


@pytest.mark.django_db(transaction=True)
def test_an_index_left_invalid_by_a_failed_concurrent_build_is_found_and_dropped(superuser, login, eager_celery):
    from monitoring.selectors import indexes
    from tests.factories import TaskFactory

    TaskFactory.create_batch(2, title="same title")
    with pytest.raises(Exception, match="could not create unique index"), connection.cursor() as cursor:
        cursor.execute("CREATE UNIQUE INDEX CONCURRENTLY mon_test_invalid_idx ON tasks_task (title)")
    try:
        row = next(r for r in indexes.index_usage()["indexes"] if r["index"] == "mon_test_invalid_idx")
        assert row["flags"] == ["invalid"]
        response = login(superuser).post(action_url("drop_invalid_index"), {"oid": row["oid"]})
        assert response.status_code == 302
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('mon_test_invalid_idx')")
            assert cursor.fetchone()[0] is None
        act = ActivityLog.objects.get(category="monitoring", action="drop_invalid_index")
        assert act.metadata["outcome"] == "done" and act.user_id == superuser.pk
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP INDEX IF EXISTS mon_test_invalid_idx")


@pytest.mark.django_db(transaction=True)
def test_reindex_concurrently_rebuilds_the_index(superuser, login, eager_celery):
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_relation_filenode('task_priority_idx')")
        (before,) = cursor.fetchone()
    response = login(superuser).post(action_url("reindex"), {"oid": table_oid("task_priority_idx")})
    assert response.status_code == 302
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_relation_filenode('task_priority_idx')")
        assert cursor.fetchone()[0] != before  # a new copy was built and swapped in
    assert JobRun.objects.get(name="monitoring.maintenance_reindex").status == JobRun.Status.SUCCEEDED


def test_create_partitions_brings_back_a_missing_month(superuser, login, eager_celery, run_on_commit):
    from datetime import UTC, datetime

    from dateutil.relativedelta import relativedelta

    from monitoring.selectors import tables

    next_month = datetime.now(UTC) + relativedelta(months=1)
    name = f"project_activitylog_{next_month:%Y_%m}"
    with connection.cursor() as cursor:
        cursor.execute(f'DROP TABLE "{name}"')
    table = next(t for t in tables.partitions() if t["table"] == "project_activitylog")
    assert table["months_ahead"] == 0 and table["status"] == "red"
    with run_on_commit(execute=True):
        response = login(superuser).post(action_url("create_partitions"), {"oid": table["oid"]})
    assert response.status_code == 302
    table = next(t for t in tables.partitions() if t["table"] == "project_activitylog")
    assert table["months_ahead"] >= 2 and table["status"] == "green"
    act = ActivityLog.objects.get(category="monitoring", action="create_partitions")
    assert act.metadata["created"] == [name]


def test_refresh_view_refreshes_a_registered_view_and_records_it(superuser, login, eager_celery, run_on_commit):
    from project.models import MaterializedViewRefresh

    with run_on_commit(execute=True):
        response = login(superuser).post(action_url("refresh_view"), {"name": "mv_job_performance"})
    assert response.status_code == 302
    refresh = MaterializedViewRefresh.objects.get(view_name="mv_job_performance")
    assert refresh.status == MaterializedViewRefresh.Status.OK
    assert login(superuser).get(action_url("refresh_view"), {"name": "pg_class"}).status_code == 404


@pytest.mark.usefixtures("with_pg_stat_statements")
def test_reset_statements_empties_this_databases_statistics_only(superuser, login, eager_celery, run_on_commit):
    _a_statement_queryid()
    with run_on_commit(execute=True):
        response = login(superuser).post(action_url("reset_statements"))
    assert response.status_code == 302
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_statements WHERE query LIKE %s "
            "AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            ["SELECT count(*) FROM tasks_task WHERE priority = $1%"],
        )
        assert cursor.fetchone()[0] == 0
    assert ActivityLog.objects.filter(category="monitoring", action="reset_statements").exists()


@pytest.mark.usefixtures("with_pg_stat_statements")
def test_explain_analyze_from_the_queries_page_asks_for_the_parameters_and_shows_the_plan(
    superuser, login, eager_celery, run_on_commit
):
    queryid = _a_statement_queryid()
    client = login(superuser)
    confirm = client.get(action_url("explain_analyze"), {"queryid": queryid}).content.decode()
    assert 'name="p1"' in confirm and "READ ONLY" in confirm
    with run_on_commit(execute=True):
        response = client.post(action_url("explain_analyze"), {"queryid": queryid, "p1": "high"})
    assert response.status_code == 302
    run_page = client.get(response["Location"]).content.decode()
    assert "Execution Time: " in run_page and "succeeded" in run_page
    assert "Aggregate" in run_page and "actual " in run_page  # the plan as an indented tree
    act = ActivityLog.objects.get(category="monitoring", action="explain_analyze")
    assert act.metadata["queryid"] == queryid and act.user_id == superuser.pk


@pytest.mark.parametrize(
    "statement, refused",
    [
        ("SELECT count(*) FROM tasks_task WHERE priority = $1", None),
        ("SELECT pg_cancel_backend($1)", "pg_cancel_backend() is VOLATILE"),
        ("SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_stat_activity", "pg_catalog.pg_terminate_backend()"),
        ("WITH x AS (SELECT nextval($1)) SELECT * FROM x", "nextval() is VOLATILE"),
        ("SELECT * FROM tasks_task WHERE id IN (SELECT pg_advisory_lock($1))", "pg_advisory_lock() is VOLATILE"),
        ("SELECT set_config($1, $2, $3)", "set_config() is VOLATILE"),
        ("SELECT no_such_function($1)", "no_such_function() is not a known function"),
        ("SELECT now(), lower(title) FROM tasks_task ORDER BY 1", None),
    ],
)
def test_explain_analyze_guard_refuses_every_volatile_or_unknown_function(statement, refused):
    """Issue 9, defect 4: a READ ONLY transaction that is rolled back does not undo a function's
    side effect; every function of the parsed statement is checked in pg_proc."""
    from monitoring.explain_guard import UnsafeStatement, check_read_only_functions

    if refused is None:
        check_read_only_functions(statement)
    else:
        with pytest.raises(UnsafeStatement, match=re.escape(refused)):
            check_read_only_functions(statement)
