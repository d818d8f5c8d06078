"""Retention (project/retention.py): operational rows past their table's age leave in bounded
batches, into archive.<table> or deleted; what a policy keeps stays; a second run changes nothing;
business records cannot be deleted; the run is a beat job with metrics and a cockpit panel."""

import threading
from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from monitoring.models import StatementSnapshot
from project.models import JobRun, MaterializedViewRefresh, OutboxMessage
from project.retention import (
    ARCHIVE,
    DELETE,
    RetentionPolicy,
    apply_retention,
    effective_policies,
    effective_policy,
    registered_policies,
)
from tests.row_locks import row_locked_elsewhere

pytestmark = pytest.mark.django_db


def _job_run(days_ago: float, status: str = JobRun.Status.SUCCEEDED, name: str = "test.retention") -> JobRun:
    return JobRun.objects.create(
        name=name, status=status, started_at=timezone.now() - timedelta(days=days_ago), result={"n": days_ago}
    )


def _archived_job_runs(ids) -> dict[int, tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, name, status, result::text FROM archive.project_jobrun WHERE id = ANY(%s)", [list(ids)]
        )
        return {row[0]: row[1:] for row in cursor.fetchall()}


def test_finished_job_runs_past_30_days_are_archived_and_the_rest_kept():
    old = _job_run(31)
    old_failed = _job_run(45, JobRun.Status.FAILED)
    old_running = _job_run(40, JobRun.Status.RUNNING)
    old_retrying = _job_run(40, JobRun.Status.RETRYING)
    recent = _job_run(29)

    result = apply_retention()

    table = result["tables"]["project.JobRun"]
    assert table["mode"] == ARCHIVE and table["rows"] == 2 and table["error"] == ""
    assert set(JobRun.objects.filter(name="test.retention").values_list("pk", flat=True)) == {
        old_running.pk,
        old_retrying.pk,
        recent.pk,
    }
    archived = _archived_job_runs([old.pk, old_failed.pk, old_running.pk, recent.pk])
    assert archived == {
        old.pk: ("test.retention", "succeeded", '{"n": 31}'),
        old_failed.pk: ("test.retention", "failed", '{"n": 45}'),
    }


def test_a_second_run_moves_nothing_and_archives_nothing_twice():
    rows = [_job_run(31 + i) for i in range(3)]
    first = apply_retention()["tables"]["project.JobRun"]
    second = apply_retention()["tables"]["project.JobRun"]
    assert (first["rows"], second["rows"]) == (3, 0)
    assert second["batches"] == 1  # one short batch found nothing
    assert set(_archived_job_runs(row.pk for row in rows)) == {row.pk for row in rows}


def test_batches_are_bounded_and_a_run_stops_at_max_batches(settings):
    settings.RETENTION_OVERRIDES = {"project.JobRun": {"batch_size": 2}}
    rows = [_job_run(31 + i) for i in range(5)]

    with CaptureQueriesContext(connection) as queries:
        first = apply_retention(max_batches=2)["tables"]["project.JobRun"]

    assert (first["rows"], first["batches"]) == (4, 2)
    assert JobRun.objects.filter(pk__in=[row.pk for row in rows]).count() == 1
    deletes = [q["sql"] for q in queries.captured_queries if 'DELETE FROM "project_jobrun"' in q["sql"]]
    assert len(deletes) == 2
    assert all("LIMIT 2" in sql and "FOR UPDATE OF t SKIP LOCKED" in sql for sql in deletes)
    # Every batch in its own transaction, with its lock and statement limits.
    batches_of_all_tables = sum("WITH doomed AS" in q["sql"] for q in queries.captured_queries)
    assert sum("set_config('lock_timeout'" in q["sql"] for q in queries.captured_queries) == batches_of_all_tables

    second = apply_retention(max_batches=2)["tables"]["project.JobRun"]
    assert (second["rows"], second["batches"]) == (1, 1)
    assert not JobRun.objects.filter(pk__in=[row.pk for row in rows]).exists()


def test_delete_mode_deletes_and_keeps_each_views_newest_successful_refresh():
    now = timezone.now()

    def refresh(view: str, days_ago: int, status: str = "ok") -> MaterializedViewRefresh:
        at = now - timedelta(days=days_ago)
        return MaterializedViewRefresh.objects.create(
            view_name=view, started_at=at, finished_at=at, duration_ms=1, status=status
        )

    superseded = refresh("mv_a", 60)
    newest_ok_of_a = refresh("mv_a", 50)
    failed_after_it = refresh("mv_a", 40, "failed")
    only_refresh_of_b = refresh("mv_b", 90)

    table = apply_retention()["tables"]["project.MaterializedViewRefresh"]

    assert table["mode"] == DELETE and table["action"] == "deleted" and table["rows"] == 1
    assert set(MaterializedViewRefresh.objects.values_list("pk", flat=True)) == {
        newest_ok_of_a.pk,
        failed_after_it.pk,
        only_refresh_of_b.pk,
    }
    assert not MaterializedViewRefresh.objects.filter(pk=superseded.pk).exists()
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('archive.project_materializedviewrefresh')")
        assert cursor.fetchone()[0] is None  # deleting never creates an archive


def test_published_outbox_messages_go_after_outbox_keep_days_and_unpublished_ones_stay(settings):
    settings.OUTBOX_KEEP_DAYS = 3
    now = timezone.now()
    published_old = OutboxMessage.objects.create(job="x", dispatched_at=now - timedelta(days=4))
    published_recent = OutboxMessage.objects.create(job="x", dispatched_at=now - timedelta(days=2))
    unpublished = OutboxMessage.objects.create(job="x")
    OutboxMessage.objects.filter(pk=unpublished.pk).update(created_at=now - timedelta(days=30))

    table = apply_retention()["tables"]["project.OutboxMessage"]

    assert table["keep_days"] == 3 and table["rows"] == 1
    assert set(OutboxMessage.objects.values_list("pk", flat=True)) == {published_recent.pk, unpublished.pk}
    assert not OutboxMessage.objects.filter(pk=published_old.pk).exists()


def test_statement_snapshots_keep_each_statements_newest_row_however_old(settings):
    old = timezone.now() - timedelta(days=settings.MONITORING_HISTORY_DAYS + 5)

    def snapshot(queryid: int, at) -> StatementSnapshot:
        return StatementSnapshot.objects.create(
            taken_at=at,
            queryid=queryid,
            userid=1,
            dbid=1,
            calls=1,
            total_exec_ms=1,
            rows=1,
            shared_blks_hit=0,
            shared_blks_read=0,
        )

    superseded = snapshot(7, old)
    baseline = snapshot(7, old + timedelta(days=1))
    idle_statement = snapshot(8, old)

    apply_retention()

    assert set(StatementSnapshot.objects.values_list("pk", flat=True)) == {baseline.pk, idle_statement.pk}
    assert not StatementSnapshot.objects.filter(pk=superseded.pk).exists()


def test_business_records_are_archived_never_deleted(settings):
    with pytest.raises(ImproperlyConfigured, match="archived, never deleted"):
        RetentionPolicy(
            model="project.JobRun", age_field="started_at", keep_days=1, mode=DELETE, kept="", business=True
        )
    business = RetentionPolicy(
        model="project.JobRun", age_field="started_at", keep_days=1, mode=ARCHIVE, kept="", business=True
    )
    settings.RETENTION_OVERRIDES = {"project.JobRun": {"mode": "delete"}}
    with pytest.raises(ImproperlyConfigured, match="archived, never deleted"):
        effective_policy(business)
    # Every registered business table archives.
    assert all(policy.mode == ARCHIVE for policy in registered_policies() if policy.business)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"project.JobRun": {"keep_dayz": 3}}, "unknown keys"),
        ({"project.JobRun": {"keep_days": 0}}, "keep_days"),
        ({"project.JobRun": {"batch_size": 1_000_000}}, "batch_size"),
        ({"project.JobRun": {"enabled": "false"}}, "enabled must be true or false"),
        ({"project.JobRun": {"mode": "truncate"}}, "mode must be one of"),
        ({"project.NoSuchTable": {"keep_days": 3}}, "nobody registered"),
    ],
)
def test_a_bad_override_is_refused_by_name(settings, overrides, message):
    settings.RETENTION_OVERRIDES = overrides
    with pytest.raises(ImproperlyConfigured, match=message):
        effective_policies()


def test_a_disabled_table_is_left_alone(settings):
    settings.RETENTION_OVERRIDES = {"project.JobRun": {"enabled": False}}
    row = _job_run(400)
    result = apply_retention()
    assert "project.JobRun" not in result["tables"]
    assert JobRun.objects.filter(pk=row.pk).exists()


def test_every_registered_table_runs_without_error():
    result = apply_retention()
    registered = {policy.model for policy in registered_policies()}
    assert {"project.JobRun", "project.OutboxMessage", "project.MaterializedViewRefresh"} <= registered
    assert {"monitoring.MetricSample", "monitoring.StatementSnapshot", "monitoring.IndexUsageSnapshot"} <= registered
    assert set(result["tables"]) == registered
    assert {model: table["error"] for model, table in result["tables"].items()} == dict.fromkeys(registered, "")


def test_the_archive_gains_columns_the_table_gained_since(settings):
    _job_run(31)
    apply_retention()  # creates archive.project_jobrun
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE archive.project_jobrun DROP COLUMN schedule")
    later = _job_run(32)
    JobRun.objects.filter(pk=later.pk).update(schedule="Apply retention")
    assert apply_retention()["tables"]["project.JobRun"]["rows"] == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT schedule FROM archive.project_jobrun WHERE id = %s", [later.pk])
        assert cursor.fetchone() == ("Apply retention",)


def test_oldest_waiting_row_and_behind_are_reported_when_a_run_leaves_rows(settings):
    from project.retention import retention_overview

    settings.RETENTION_OVERRIDES = {"project.JobRun": {"batch_size": 1}}
    _job_run(40)
    _job_run(35)
    apply_retention(max_batches=1)  # one of the two leaves
    row = next(t for t in retention_overview()["tables"] if t["model"] == "project.JobRun")
    assert row["last_rows"] == 1
    assert 34 * 86400 < row["oldest_prunable_age_s"] < 36 * 86400
    assert row["behind"] is True  # 35 days > 30 days + one day of slack


def test_metrics_export_rows_moved_oldest_age_and_keep_per_table():
    from project.metrics import render_metrics

    _job_run(31)
    apply_retention()
    text = render_metrics().decode()
    assert 'opsdeck_retention_rows_total{action="archived",table="project_jobrun"}' in text
    assert 'opsdeck_retention_oldest_row_age_seconds{table="project_jobrun"}' in text
    assert 'opsdeck_retention_keep_seconds{table="project_jobrun"} 2.592e+06' in text
    assert 'opsdeck_retention_last_run_rows{action="archived",table="project_jobrun"} 1.0' in text
    assert "opsdeck_retention_last_run_timestamp_seconds " in text


def test_retention_is_a_beat_job_recorded_like_every_job():
    from project.celery import app
    from project.jobs import apply_retention_job
    from project.schedules import SCHEDULES

    schedule = next(s for s in SCHEDULES if s.job == "project.apply_retention")
    assert schedule.queue == "maintenance" and schedule.crontab == {"minute": "35"}
    assert "project.apply_retention" in app.tasks
    row = _job_run(31)
    apply_retention_job.run_now({})
    run = JobRun.objects.filter(name="project.apply_retention").get()
    assert run.status == JobRun.Status.SUCCEEDED
    assert run.result["tables"]["project.JobRun"]["rows"] == 1
    assert not JobRun.objects.filter(pk=row.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_rows_another_transaction_holds_are_skipped_not_waited_for():
    held, others = _job_run(31), [_job_run(32), _job_run(33)]
    with row_locked_elsewhere(JobRun, held.pk):
        moved = apply_retention()["tables"]["project.JobRun"]["rows"]
    assert moved == 2
    assert JobRun.objects.filter(pk=held.pk).exists()
    assert set(_archived_job_runs([held.pk, *(row.pk for row in others)])) == {row.pk for row in others}
    assert apply_retention()["tables"]["project.JobRun"]["rows"] == 1  # the next run takes it
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM archive.project_jobrun WHERE id = ANY(%s)", [[held.pk, *(r.pk for r in others)]])


def test_a_scrape_reads_the_last_run_from_the_cache_without_a_query(django_assert_num_queries):
    from django.core.cache import cache

    from project.retention import STATUS_CACHE_KEY, RetentionCollector

    apply_retention()
    with django_assert_num_queries(0):
        names = {family.name for family in RetentionCollector().collect()}
    assert "opsdeck_retention_last_run_timestamp_seconds" in names
    cache.delete(STATUS_CACHE_KEY)
    with django_assert_num_queries(0):
        names = {family.name for family in RetentionCollector().collect()}
    assert "opsdeck_retention_last_run_timestamp_seconds" not in names


def test_the_cockpit_falls_back_on_the_last_job_run_when_the_cache_is_gone():
    from django.core.cache import cache

    from project.jobs import apply_retention_job
    from project.retention import STATUS_CACHE_KEY, retention_overview

    _job_run(31)
    apply_retention_job.run_now({})
    cache.delete(STATUS_CACHE_KEY)
    overview = retention_overview()
    assert overview["last_run_at"] is not None
    assert next(t for t in overview["tables"] if t["model"] == "project.JobRun")["last_rows"] == 1


@pytest.mark.django_db(transaction=True)
def test_a_table_locked_by_ddl_is_given_up_for_this_run_and_the_others_still_run(settings):
    settings.RETENTION_LOCK_TIMEOUT = "100ms"
    old_run = _job_run(31)
    locked, release = threading.Event(), threading.Event()

    def hold_table():
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("LOCK TABLE project_materializedviewrefresh IN ACCESS EXCLUSIVE MODE")
                locked.set()
                release.wait(timeout=60)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_table)
    holder.start()
    try:
        assert locked.wait(timeout=60)
        result = apply_retention()["tables"]
    finally:
        release.set()
        holder.join()
    assert "lock timeout" in result["project.MaterializedViewRefresh"]["error"]
    assert result["project.JobRun"]["rows"] == 1 and result["project.JobRun"]["error"] == ""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM archive.project_jobrun WHERE id = %s", [old_run.pk])
