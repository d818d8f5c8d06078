"""Materialized views: registered, refreshed CONCURRENTLY, every refresh recorded, staleness known."""

import datetime
import json
import threading

import pytest
from django.db import ProgrammingError, connection
from django.db.utils import OperationalError
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from project import matviews, schedules
from project.db.locks import lease
from project.jobs import refresh_materialized_view_job
from project.matviews import (
    UnknownMaterializedView,
    materialized_view_status,
    refresh_materialized_view,
    register_materialized_view,
)
from project.models import JobRun, MaterializedViewRefresh
from project.schedules import Schedule, sync_schedules

VIEW = "test_mv_jobrun_counts"


@pytest.fixture
def registry(monkeypatch):
    """A registry of this test's own: the real one holds the apps' views."""
    monkeypatch.setattr(matviews, "_registry", {})
    return matviews._registry


def create_view(name: str = VIEW, *, with_data: bool = True, unique_index: bool = True) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE MATERIALIZED VIEW {name} AS SELECT name, count(*) AS runs FROM project_jobrun GROUP BY name"
            + ("" if with_data else " WITH NO DATA")
        )
        if unique_index:
            cursor.execute(f"CREATE UNIQUE INDEX {name}_name ON {name} (name)")


def view_rows(name: str = VIEW) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT name, runs FROM {name}")
        return dict(cursor.fetchall())


def add_runs(name: str, count: int) -> None:
    now = timezone.now()
    JobRun.objects.bulk_create(
        JobRun(name=name, status=JobRun.Status.SUCCEEDED, started_at=now, finished_at=now) for _ in range(count)
    )


@pytest.mark.django_db
def test_refresh_concurrently_updates_the_view_and_records_the_refresh(registry):
    create_view()
    register_materialized_view(VIEW, refresh_every_s=3600, description="Runs per job.")
    add_runs("tests.a", 3)
    statements = []

    def capture(execute, sql, params, many, context):
        statements.append(sql.as_string(context["connection"].connection) if hasattr(sql, "as_string") else sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        refresh = refresh_materialized_view(VIEW)

    assert view_rows() == {"tests.a": 3}
    assert any(f'REFRESH MATERIALIZED VIEW CONCURRENTLY "{VIEW}"' in str(sql) for sql in statements)
    assert refresh.pk is not None
    assert (refresh.view_name, refresh.status, refresh.concurrently, refresh.error) == (VIEW, "ok", True, "")
    assert refresh.finished_at >= refresh.started_at
    assert refresh.duration_ms >= 0


@pytest.mark.django_db
def test_a_failed_refresh_is_recorded_and_re_raised(registry):
    create_view(unique_index=False)  # CONCURRENTLY needs a unique index
    register_materialized_view(VIEW, refresh_every_s=3600, description="Runs per job.")

    with pytest.raises((ProgrammingError, OperationalError), match="unique index"):
        refresh_materialized_view(VIEW)

    [refresh] = MaterializedViewRefresh.objects.filter(view_name=VIEW)
    assert refresh.status == MaterializedViewRefresh.Status.FAILED
    assert "unique index" in refresh.error
    # The transaction is still usable after the failure (the refresh ran in a savepoint).
    assert JobRun.objects.count() >= 0


@pytest.mark.django_db
def test_a_view_created_with_no_data_gets_a_plain_first_refresh(registry):
    create_view(with_data=False)
    register_materialized_view(VIEW, refresh_every_s=3600, description="Runs per job.")
    add_runs("tests.b", 2)

    first = refresh_materialized_view(VIEW)
    second = refresh_materialized_view(VIEW)

    assert view_rows() == {"tests.b": 2}
    assert (first.concurrently, second.concurrently) == (False, True)


@pytest.mark.django_db
def test_only_registered_views_with_plain_names_can_be_refreshed(registry):
    with pytest.raises(UnknownMaterializedView):
        refresh_materialized_view("pg_class")
    for bad in ('mv"; DROP TABLE project_jobrun; --', "MV_Upper", "a.b.c", ""):
        with pytest.raises(ValueError, match="identifier"):
            register_materialized_view(bad, refresh_every_s=60, description="")
    register_materialized_view(VIEW, refresh_every_s=60, description="x")
    register_materialized_view(VIEW, refresh_every_s=60, description="x")  # same again: fine
    with pytest.raises(ValueError, match="already registered"):
        register_materialized_view(VIEW, refresh_every_s=120, description="x")


@pytest.mark.django_db
def test_status_reports_staleness_population_and_size_in_three_queries(registry, django_assert_num_queries):
    create_view()
    create_view("test_mv_empty", with_data=False)
    register_materialized_view(VIEW, refresh_every_s=600, description="Runs per job.")
    register_materialized_view("test_mv_empty", refresh_every_s=600, description="Never refreshed.")
    register_materialized_view("test_mv_missing", refresh_every_s=600, description="Not created.")
    refresh_materialized_view(VIEW)
    # An older failure does not count as a refresh; a newer one shows as the last status.
    MaterializedViewRefresh.objects.filter(view_name=VIEW).update(
        finished_at=timezone.now() - datetime.timedelta(seconds=1000)
    )

    with django_assert_num_queries(3):
        status = {row["name"]: row for row in materialized_view_status()}

    fresh = status[VIEW]
    assert fresh["last_status"] == "ok" and fresh["populated"] is True and fresh["exists"] is True
    assert 1000 <= fresh["staleness_s"] < 1100
    assert fresh["stale"] is False  # 1000 s < 2 x 600 s
    assert fresh["size_bytes"] > 0
    assert fresh["refresh_every_s"] == 600 and fresh["last_duration_ms"] >= 0

    MaterializedViewRefresh.objects.filter(view_name=VIEW).update(
        finished_at=timezone.now() - datetime.timedelta(seconds=1300)
    )
    assert {row["name"]: row for row in materialized_view_status()}[VIEW]["stale"] is True  # > 1200 s

    empty, missing = status["test_mv_empty"], status["test_mv_missing"]
    assert (empty["populated"], empty["stale"], empty["staleness_s"], empty["last_status"]) == (
        False,
        True,
        None,
        None,
    )
    assert (missing["exists"], missing["populated"], missing["size_bytes"], missing["stale"]) == (
        False,
        None,
        None,
        True,
    )


@pytest.mark.django_db
def test_last_status_is_the_latest_refresh_but_staleness_counts_from_the_last_success(registry):
    create_view()
    register_materialized_view(VIEW, refresh_every_s=600, description="Runs per job.")
    ok = refresh_materialized_view(VIEW)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX {VIEW}_name")
    with pytest.raises((ProgrammingError, OperationalError)):
        refresh_materialized_view(VIEW)

    [row] = materialized_view_status()

    assert row["last_status"] == "failed" and "unique index" in row["last_error"]
    assert row["last_refreshed_at"] == ok.finished_at


@pytest.mark.django_db
def test_the_scheduled_job_refreshes_the_named_view_and_refuses_unknown_names(registry):
    create_view()
    register_materialized_view(VIEW, refresh_every_s=3600, description="Runs per job.")
    add_runs("tests.c", 1)

    result = refresh_materialized_view_job.run_now({"name": VIEW})

    assert result["view"] == VIEW and result["concurrently"] is True
    assert view_rows()["tests.c"] == 1
    assert MaterializedViewRefresh.objects.filter(view_name=VIEW, status="ok").count() == 1
    with pytest.raises(UnknownMaterializedView):
        refresh_materialized_view_job.run_now({"name": "mv_nobody_registered"})
    assert (
        JobRun.objects.filter(name="project.refresh_materialized_view")
        .values_list("status", flat=True)
        .order_by("id")
        .last()
        == JobRun.Status.FAILED
    )


@pytest.mark.django_db
def test_the_job_skips_a_view_whose_refresh_is_already_running(registry):
    create_view()
    register_materialized_view(VIEW, refresh_every_s=3600, description="Runs per job.")
    # Held by another holder, committed from another connection.
    holding, release = threading.Event(), threading.Event()

    def hold_lock():
        from django.db import connection as thread_connection

        try:
            with lease(f"matview:{VIEW}"):
                holding.set()
                release.wait(10)
        finally:
            thread_connection.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert holding.wait(10)
        result = refresh_materialized_view_job.run_now({"name": VIEW})
    finally:
        release.set()
        holder.join(10)

    assert result == {"skipped": f"another refresh of {VIEW} is running"}
    assert not MaterializedViewRefresh.objects.filter(view_name=VIEW).exists()


@pytest.mark.django_db
def test_schedule_kwargs_are_synced_into_the_periodic_task_and_a_second_sync_changes_nothing(monkeypatch):
    refresh = Schedule(
        name="Refresh test view",
        job="project.refresh_materialized_view",
        queue="maintenance",
        crontab={"minute": "*/15"},
        description="Refresh the test view.",
        kwargs={"name": VIEW, "a": 1},
    )
    monkeypatch.setattr(schedules, "PLATFORM_SCHEDULES", [*schedules.PLATFORM_SCHEDULES, refresh])

    sync_schedules()
    first = PeriodicTask.objects.get(name="Refresh test view")
    sync_schedules()
    second = PeriodicTask.objects.get(name="Refresh test view")

    assert json.loads(first.kwargs) == {"name": VIEW, "a": 1}
    assert (second.kwargs, second.queue, second.task) == (first.kwargs, "maintenance", first.task)
    # Code owns the kwargs: an admin edit is put back, like the job and queue.
    PeriodicTask.objects.filter(pk=first.pk).update(kwargs='{"name": "typo"}')
    sync_schedules()
    assert json.loads(PeriodicTask.objects.get(pk=first.pk).kwargs) == {"name": VIEW, "a": 1}
    # Schedules without kwargs run with none.
    assert PeriodicTask.objects.get(name="Maintain monthly partitions").kwargs == "{}"


@pytest.mark.django_db
def test_refresh_history_is_listed_read_only_in_the_admin(registry, admin_client):
    create_view()
    register_materialized_view(VIEW, refresh_every_s=3600, description="Runs per job.")
    refresh = refresh_materialized_view(VIEW)

    listing = admin_client.get("/admin/project/materializedviewrefresh/")
    detail = admin_client.get(f"/admin/project/materializedviewrefresh/{refresh.pk}/change/")

    assert listing.status_code == 200 and VIEW in listing.content.decode()
    assert detail.status_code == 200 and b'name="_save"' not in detail.content
    assert admin_client.get("/admin/project/materializedviewrefresh/add/").status_code == 403
