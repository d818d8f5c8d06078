"""Every SQL statement names the view or job that issued it, in a leading comment."""

import threading
import uuid

import pytest
from celery import shared_task
from django.db import connection
from psycopg import sql

from project.activity import activity_record
from project.db.attribution import origin_of, sql_origin, strip_origin, view_name
from project.jobrunner import scheduled_job
from project.jobs import maintain_partitions
from project.models import ActivityLog, JobRun
from tests.factories import TaskFactory

THREAD_TIMEOUT_S = 10


class Captured(list):
    """The statements as sent (the capture sits inside the attribution wrapper)."""

    def __call__(self, execute, sql_, params, many, context):
        self.append(sql_.as_string(context["connection"].connection) if hasattr(sql_, "as_string") else str(sql_))
        return execute(sql_, params, many, context)

    def origins(self) -> set:
        return {origin_of(statement) for statement in self}


@pytest.fixture
def captured():
    statements = Captured()
    with connection.execute_wrapper(statements):
        yield statements


@scheduled_job("tests.attribution_job")
def attribution_job() -> dict:
    return {"runs": JobRun.objects.filter(name="tests.attribution_job").count()}


@shared_task(name="tests.plain_task")
def plain_task() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 41 + 1")
        return cursor.fetchone()[0]


def test_origin_of_reads_the_comment_back():
    assert origin_of("/* opsdeck:view=tasks.TaskViewSet.list */ SELECT 1") == "view=tasks.TaskViewSet.list"
    assert origin_of("  /* opsdeck:job=approvals.run_automation */ UPDATE x SET y = $1") == (
        "job=approvals.run_automation"
    )
    assert origin_of("SELECT 1 /* opsdeck:job=a.b */") == "job=a.b"
    assert origin_of("SELECT 1") is None
    assert origin_of("/* some other tool */ SELECT 1") is None
    assert origin_of("") is None and origin_of(None) is None


def test_strip_origin_gives_the_bare_statement():
    assert strip_origin("/* opsdeck:job=a.b */ SELECT 1 /* opsdeck:job=a.b */") == "SELECT 1"
    assert strip_origin("SELECT 1") == "SELECT 1"


@pytest.mark.django_db
def test_a_drf_list_request_queries_carry_its_viewset_and_action(staff_client, captured):
    TaskFactory.create_batch(2)
    captured.clear()

    response = staff_client.get("/api/v1/tasks/")

    assert response.status_code == 200
    assert captured, "the request ran no query"
    # Session, user, permissions and the list itself: all attributed, none left out.
    assert captured.origins() == {"view=tasks.TaskViewSet.list"}
    comment = "/* opsdeck:view=tasks.TaskViewSet.list */"
    assert all(statement.startswith(comment + " ") and statement.endswith(" " + comment) for statement in captured)


@pytest.mark.django_db
def test_drf_extra_actions_and_writes_are_named_by_action(staff_client, captured):
    task = TaskFactory()
    captured.clear()

    staff_client.post("/api/v1/tasks/batch/", {"ids": [task.pk]}, format="json")
    batch = captured.origins()
    captured.clear()
    response = staff_client.patch(f"/api/v1/tasks/{task.pk}/", {"title": "Renamed"}, format="json")

    assert response.status_code == 200
    assert batch == {"view=tasks.TaskViewSet.batch"}
    assert captured.origins() == {"view=tasks.TaskViewSet.partial_update"}


@pytest.mark.django_db
def test_admin_pages_are_named_by_model_admin_and_view(admin_client, captured):
    admin_client.get("/admin/project/jobrun/")
    changelist = captured.origins()
    captured.clear()
    admin_client.get("/admin/")

    assert changelist == {"view=project.JobRunAdmin.changelist_view"}
    assert captured.origins() == {"view=admin.AdminSite.index"}


def test_view_names_for_plain_functions_and_class_based_views():
    from django.views.generic import TemplateView

    from project import health

    assert view_name(health.ready, "GET") == "project.ready"
    assert view_name(TemplateView.as_view(template_name="x.html"), "GET") == "django.TemplateView.get"


@pytest.mark.django_db
def test_a_job_run_queries_carry_the_job_name_including_its_lock_and_jobrun_rows(captured):
    attribution_job.run_now({})

    assert len(captured) >= 4  # lock, JobRun insert, the job's query, JobRun update, unlock
    assert captured.origins() == {"job=tests.attribution_job"}


@pytest.mark.django_db
def test_any_celery_task_is_attributed_through_the_task_signals(captured):
    assert plain_task.apply().get() == 42

    assert captured.origins() == {"job=tests.plain_task"}
    captured.clear()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert captured.origins() == {None}  # and the origin ends with the task


@pytest.mark.django_db
def test_the_comment_keeps_composed_sql_copy_and_psqlextra_working(captured):
    with sql_origin(job="tests.compat"):
        with connection.cursor() as cursor:
            cursor.execute(
                sql.SQL("SELECT {} FROM {}").format(sql.Identifier("name"), sql.Identifier("project_jobrun"))
            )
            cursor.execute(b"SELECT 1")
            cursor.execute("CREATE TEMPORARY TABLE attribution_copy (n int, s text)")
            with cursor.copy("COPY attribution_copy (n, s) FROM STDIN") as copy:
                copy.write_row((1, "one %s 50% */"))
                copy.write_row((2, "two"))
            cursor.execute("SELECT count(*), max(s) FROM attribution_copy WHERE n > %s", [0])
            assert cursor.fetchone() == (2, "two")
        # psqlextra's partitioned model (composite key, db_default id) inserts and reads back.
        activity_record(category="tests", action="attributed", entity_type="x", entity_id="1")
        assert ActivityLog.objects.filter(category="tests", action="attributed").count() == 1
        # psqlextra's partition DDL through the job runner (a nested origin: the job's wins).
        assert "tables" in maintain_partitions.run_now({})

    origins = captured.origins()
    assert origins == {"job=tests.compat", "job=project.maintain_partitions"}
    assert not any("COPY" in statement for statement in captured)  # COPY bypasses execute wrappers


@pytest.mark.django_db(transaction=True)
def test_threads_with_the_native_pool_keep_their_own_origin():
    seen: dict[str, set] = {}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        from django.db import connection as thread_connection

        statements = Captured()
        try:
            with sql_origin(job=name), thread_connection.execute_wrapper(statements):
                for _ in range(5):
                    with thread_connection.cursor() as cursor:
                        cursor.execute("SELECT pg_backend_pid()")
            seen[name] = statements.origins()
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)
        finally:
            thread_connection.close()  # back to the pool

    threads = [threading.Thread(target=work, args=(f"tests.thread_{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_TIMEOUT_S)

    assert not errors
    assert seen == {f"tests.thread_{i}": {f"job=tests.thread_{i}"} for i in range(4)}


def test_statements_ending_in_a_semicolon_or_a_line_comment_stay_valid(db, captured):
    with sql_origin(job="tests.endings"), connection.cursor() as cursor:
        cursor.execute("SELECT 1;  ")
        assert cursor.fetchone() == (1,)
        cursor.execute("SELECT 2 -- the answer, almost")
        assert cursor.fetchone() == (2,)

    assert captured[0] == "/* opsdeck:job=tests.endings */ SELECT 1 /* opsdeck:job=tests.endings */;"
    assert captured[1].endswith("almost\n/* opsdeck:job=tests.endings */")


@pytest.mark.django_db
def test_pg_stat_statements_keeps_the_comment_of_the_first_execution():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'")
        if cursor.fetchone() is None:
            pytest.skip("pg_stat_statements is not installed in the test database")
        # A table of its own: queryid ignores comments and column aliases, not relations.
        probe = f"attribution_probe_{uuid.uuid4().hex}"
        cursor.execute(f"CREATE TEMPORARY TABLE {probe} (n int)")
        with sql_origin(view="tests.ProbeView.list"):
            cursor.execute(f"SELECT n FROM {probe} WHERE n = %s", [1])
        with sql_origin(job="tests.second_caller"):
            cursor.execute(f"SELECT n FROM {probe} WHERE n = %s", [2])  # same statement: same queryid
        cursor.execute(
            "SELECT query, calls FROM pg_stat_statements WHERE query LIKE %s AND query NOT LIKE %s",
            [f"%SELECT n FROM {probe}%", "%pg_stat_statements%"],
        )
        rows = cursor.fetchall()

    [(query, calls)] = rows
    assert calls == 2
    assert origin_of(query) == "view=tests.ProbeView.list"
