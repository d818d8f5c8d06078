"""Reconciliation analytics: four materialized views, refreshed CONCURRENTLY on a schedule, read
tenant-scoped with the time of their last refresh.

The data set (built once per test by `world`) is small and every figure below is counted by hand
from it. T is noon UTC two days before the database's now(), so the day and hour buckets do not
depend on when the test runs.
"""

import datetime
import json
from decimal import Decimal

import pytest
from django.db import connection, transaction

from project.jobs import refresh_materialized_view_job
from project.matviews import materialized_view_status, refresh_materialized_view, registered_materialized_views
from project.models import JobRun, MaterializedViewRefresh
from project.schedules import SCHEDULES
from reconciliation.analytics import matviews as analytics
from reconciliation.analytics.matviews import (
    JOB_PERFORMANCE,
    MATCH_ACCURACY,
    SUMMARY_DAILY,
    TENANT_USAGE_HOURLY,
    daily_summary,
    job_performance,
    match_accuracy,
    tenant_usage_hourly,
)
from reconciliation.api.analytics_serializers import (
    DailySummaryQuerySerializer,
    DailySummarySerializer,
    JobPerformanceSerializer,
    MatchAccuracySerializer,
    TenantUsageHourlySerializer,
    TenantUsageQuerySerializer,
)
from reconciliation.engine import jobs as reconciliation_jobs
from reconciliation.models import Execution, Match, ReconciliationException, ReconciliationJob, Record, Tenant
from reconciliation.review import services as review_services
from tests.reconciliation.factories import JobFactory, load

VIEWS = [SUMMARY_DAILY, JOB_PERFORMANCE, TENANT_USAGE_HOURLY, MATCH_ACCURACY]
S = datetime.timedelta(seconds=1)
H = datetime.timedelta(hours=1)
D = datetime.timedelta(days=1)


def db_now() -> datetime.datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        return cursor.fetchone()[0]


def execution(job, status, created_at, *, duration_s=None, dry_run=False, summary=None) -> Execution:
    started = created_at + S if duration_s is not None else None
    run = Execution.objects.create(
        tenant_id=job.tenant_id, job=job, status=status, dry_run=dry_run, summary=summary or {}
    )
    # created_at is auto_now_add: set the time under test afterwards.
    Execution.objects.filter(pk=run.pk).update(
        created_at=created_at,
        started_at=started,
        finished_at=started + duration_s * S if started else None,
    )
    run.refresh_from_db()
    return run


def match(job, run, pass_name, status, at, *, confidence="0.9000", left=1, right=1, left_amount="10.50",
          right_amount="10.75") -> Match:  # fmt: skip
    return Match.objects.create(
        tenant_id=job.tenant_id,
        job_id=job.pk,
        execution_id=run.pk if run else None,
        pass_name=pass_name,
        status=status,
        confidence=Decimal(confidence),
        left_ids=list(range(1, left + 1)),
        right_ids=list(range(1, right + 1)),
        left_amount=Decimal(left_amount),
        right_amount=Decimal(right_amount),
        matched_at=at,
    )


def exception(job, run, at, *, amount, resolved=False) -> ReconciliationException:
    return ReconciliationException.objects.create(
        tenant_id=job.tenant_id,
        job_id=job.pk,
        execution_id=run.pk,
        record_id=1,
        side="left",
        amount=Decimal(amount),
        reason=ReconciliationException.Reason.NO_CANDIDATE,
        created_at=at,
        resolved_at=at + H if resolved else None,
    )


def records(job, count, created_at, prefix) -> None:
    Record.objects.bulk_create(
        Record(
            tenant_id=job.tenant_id, job=job, side="left", external_id=f"{prefix}-{n}", amount=Decimal("1"),
            currency="EUR", booked_on=created_at.date(),
        )
        for n in range(count)
    )  # fmt: skip
    Record.objects.filter(job=job, external_id__startswith=f"{prefix}-").update(created_at=created_at)


def refresh_all() -> None:
    for name in VIEWS:
        refresh_materialized_view(name)


@pytest.fixture
def world(db):
    now = db_now().astimezone(datetime.UTC)
    t = now.replace(hour=12, minute=0, second=0, microsecond=0) - 2 * D
    tenant_a = Tenant.objects.create(name="A", slug="a")
    tenant_b = Tenant.objects.create(name="B", slug="b")
    a1 = ReconciliationJob.objects.create(tenant=tenant_a, name="Bank vs ledger")
    a2 = ReconciliationJob.objects.create(tenant=tenant_a, name="Never run")
    b1 = ReconciliationJob.objects.create(tenant=tenant_b, name="B's job")

    # Job a1. On day T: two runs that succeeded (10 s, 20 s), one that failed, one dry run.
    e1 = execution(a1, "succeeded", t, duration_s=10, summary={"match_rate": 0.5})
    e2 = execution(a1, "succeeded", t + 60 * S, duration_s=20, summary={"match_rate": 0.8})
    execution(a1, "failed", t + 120 * S, duration_s=5, summary={"match_rate": 0.1})  # the latest run
    execution(a1, "succeeded", t + 30 * S, duration_s=1000, dry_run=True, summary={"match_rate": 1})  # in no figure
    # The day before: a run of 30 s whose summary has no usable rate, one cancelled before it started.
    execution(a1, "succeeded", t - D, duration_s=30, summary={"match_rate": "n/a"})
    execution(a1, "cancelled", t - D + S)
    # Outside the 90-day window.
    old = execution(a1, "succeeded", t - 100 * D, duration_s=500, summary={"match_rate": 0})

    # e1 settled 8 records: three matches of 2 records, two exceptions (one since resolved).
    match(a1, e1, "exact", "auto", t)
    match(a1, e1, "exact", "auto", t)
    match(a1, e1, "tolerance", "suggested", t, confidence="0.7500")
    exception(a1, e1, t, amount="7.25")
    exception(a1, e1, t, amount="3.00", resolved=True)
    # e2 matched 7 records: two confirmed pairs, a confirmed 1-to-2 group the day before (its
    # matched_at), and a match a person rejected (which matched nothing).
    match(a1, e2, "tolerance", "confirmed", t, confidence="0.8000")
    match(a1, e2, "tolerance", "confirmed", t, confidence="0.7000")
    match(a1, e2, "group", "confirmed", t - D, right=2, left_amount="30.00", right_amount="30.00")
    match(a1, e2, "tolerance", "rejected", t, confidence="0.6500")
    # A person's manual match: a match of the day, but no prediction to grade.
    match(a1, None, "manual", "confirmed", t, confidence="1.0000")
    # Outside the window: a rejection that would change the accuracy.
    match(a1, old, "exact", "rejected", t - 100 * D)

    # Tenant B: one run, one match, rejected.
    eb = execution(b1, "succeeded", t, duration_s=1)
    match(b1, eb, "exact", "rejected", t)

    records(a1, 3, t, "a-now")
    records(a1, 2, t - 3 * H, "a-before")
    records(b1, 2, t, "b-now")
    records(a1, 4, t - 40 * D, "a-old")  # outside the 30-day usage window

    return {"t": t, "a": tenant_a, "b": tenant_b, "a1": a1, "a2": a2, "b1": b1}


def without_names(rows: list[dict], *names: str) -> list[dict]:
    return [{key: value for key, value in row.items() if key not in names} for row in rows]


# ---- the figures ---------------------------------------------------------------------------------


def test_daily_summary_counts_per_job_and_utc_day(world):
    refresh_all()
    a, a1, t = world["a"], world["a1"], world["t"]

    result = daily_summary(tenant_ids=[a.pk])

    assert result["rows"] == [
        {
            "tenant_id": a.pk, "job_id": a1.pk, "job_name": "Bank vs ledger", "day": (t - D).date(),
            "executions": 2, "succeeded": 1, "failed": 0,
            "matches": 1, "matched_records": 3, "exceptions": 0, "open_records": 0,
            "match_rate": Decimal("1.0000"),
            "amount_matched_left": Decimal("30.0000"), "amount_matched_right": Decimal("30.0000"),
            "amount_open": Decimal("0.0000"),
        },
        {
            "tenant_id": a.pk, "job_id": a1.pk, "job_name": "Bank vs ledger", "day": t.date(),
            # e1, e2 and the failed run; not the dry run.
            "executions": 3, "succeeded": 2, "failed": 1,
            # auto x2, suggested, confirmed x2, manual; not the rejected one.
            "matches": 6, "matched_records": 12, "exceptions": 2, "open_records": 1,
            "match_rate": Decimal("0.8571"),  # 12 / (12 + 2)
            "amount_matched_left": Decimal("63.0000"), "amount_matched_right": Decimal("64.5000"),
            "amount_open": Decimal("7.2500"),
        },
    ]  # fmt: skip


def test_daily_summary_filters_by_job_and_first_day(world):
    refresh_all()
    a, a1, t = world["a"], world["a1"], world["t"]

    assert [row["day"] for row in daily_summary(tenant_ids=[a.pk], since=t.date())["rows"]] == [t.date()]
    assert daily_summary(tenant_ids=[a.pk], job_id=world["a2"].pk)["rows"] == []
    assert len(daily_summary(tenant_ids=[a.pk], job_id=a1.pk)["rows"]) == 2


def test_job_performance_over_real_runs(world):
    refresh_all()
    a, a1, a2, t = world["a"], world["a1"], world["a2"], world["t"]

    rows = job_performance(tenant_ids=[a.pk])["rows"]

    assert rows == [
        {
            "tenant_id": a.pk, "job_id": a1.pk, "job_name": "Bank vs ledger", "is_active": True,
            "executions": 5, "succeeded": 3, "failed": 1, "cancelled": 1,
            "success_rate": Decimal("0.7500"),  # 3 / (3 + 1): a cancelled run is no failure
            "avg_duration_s": Decimal("20.000"),  # succeeded runs: 10, 20, 30 s
            "p95_duration_s": Decimal("29.000"),  # percentile_cont: 20 + 0.9 x (30 - 20)
            "last_run_at": t + 120 * S + S,
            "last_status": "failed",
            # From the succeeded runs' summaries: e1 0.5, e2 0.8 (e3 reports no number).
            "avg_match_rate": Decimal("0.6500"), "last_match_rate": Decimal("0.8"),
        },
        {
            "tenant_id": a.pk, "job_id": a2.pk, "job_name": "Never run", "is_active": True,
            "executions": 0, "succeeded": 0, "failed": 0, "cancelled": 0,
            "success_rate": None, "avg_duration_s": None, "p95_duration_s": None,
            "last_run_at": None, "last_status": None, "avg_match_rate": None, "last_match_rate": None,
        },
    ]  # fmt: skip


def test_tenant_usage_counts_per_utc_hour_from_the_hour_of_since(world):
    refresh_all()
    a, b, t = world["a"], world["b"], world["t"]

    # since inside the hour T - 3h: that hour is included whole.
    rows = tenant_usage_hourly(tenant_ids=[a.pk, b.pk], since=t - 3 * H + 30 * 60 * S)["rows"]

    assert rows == [
        {"tenant_id": a.pk, "hour": t - 3 * H, "records_ingested": 2, "executions": 0, "matches_created": 0},
        # Every match made, whatever became of it (rejected and manual ones too).
        {"tenant_id": a.pk, "hour": t, "records_ingested": 3, "executions": 3, "matches_created": 7},
        {"tenant_id": b.pk, "hour": t, "records_ingested": 2, "executions": 1, "matches_created": 1},
    ]


def test_tenant_usage_keeps_30_days(world):
    refresh_all()
    a, t = world["a"], world["t"]

    rows = tenant_usage_hourly(tenant_ids=[a.pk], since=t - 60 * D)["rows"]

    assert [row["hour"] for row in rows] == [t - D, t - 3 * H, t]  # not the records of T - 40 days


def test_accuracy_is_confirmed_over_reviewed_matcher_matches(world):
    refresh_all()
    a, b, a1, b1 = world["a"], world["b"], world["a1"], world["b1"]

    rows = match_accuracy(tenant_ids=[a.pk, b.pk])["rows"]

    assert rows == [
        {
            "tenant_id": a.pk, "job_id": a1.pk, "job_name": "Bank vs ledger",
            # Not the manual match, not the rejection of 100 days ago.
            "matches": 7, "auto": 2, "suggested": 1, "confirmed": 3, "rejected": 1, "reviewed": 4,
            "accuracy": Decimal("0.7500"),
            "by_pass": {
                "exact": {
                    "matches": 2, "auto": 2, "suggested": 0, "confirmed": 0, "rejected": 0, "reviewed": 0,
                    "accuracy": None, "avg_confidence_confirmed": None, "avg_confidence_rejected": None,
                },
                "group": {
                    "matches": 1, "auto": 0, "suggested": 0, "confirmed": 1, "rejected": 0, "reviewed": 1,
                    "accuracy": 1.0, "avg_confidence_confirmed": 0.9, "avg_confidence_rejected": None,
                },
                "tolerance": {
                    "matches": 4, "auto": 0, "suggested": 1, "confirmed": 2, "rejected": 1, "reviewed": 3,
                    "accuracy": 0.6667, "avg_confidence_confirmed": 0.75, "avg_confidence_rejected": 0.65,
                },
            },
        },
        {
            "tenant_id": b.pk, "job_id": b1.pk, "job_name": "B's job",
            "matches": 1, "auto": 0, "suggested": 0, "confirmed": 0, "rejected": 1, "reviewed": 1,
            "accuracy": Decimal("0.0000"),
            "by_pass": {
                "exact": {
                    "matches": 1, "auto": 0, "suggested": 0, "confirmed": 0, "rejected": 1, "reviewed": 1,
                    "accuracy": 0.0, "avg_confidence_confirmed": None, "avg_confidence_rejected": 0.9,
                },
            },
        },
    ]  # fmt: skip


def test_accuracy_is_null_while_nothing_is_reviewed(world):
    job = ReconciliationJob.objects.create(tenant=world["b"], name="Only auto")
    match(job, None, "exact", "auto", world["t"])
    refresh_materialized_view(MATCH_ACCURACY)

    (row,) = [row for row in match_accuracy(tenant_ids=[world["b"].pk])["rows"] if row["job_id"] == job.pk]

    assert (row["reviewed"], row["accuracy"], row["by_pass"]["exact"]["accuracy"]) == (0, None, None)


def test_the_views_agree_with_what_the_matcher_and_a_reviewer_wrote(db):
    """End to end: real ingest, a real run, a rejection; the views say what the tables say."""
    job = JobFactory(rules={"passes": {"group": {"enabled": False}}})
    load(
        job,
        "left",
        [
            ("L1", "10.00", "EUR", "2026-03-10", "INV-1"),
            ("L2", "20.00", "EUR", "2026-03-10", "INV-2"),
            ("L3", "99.00", "EUR", "2026-03-10", "INV-3"),
        ],
    )
    load(job, "right", [("R1", "10.00", "EUR", "2026-03-10", "INV-1"), ("R2", "20.00", "EUR", "2026-03-10", "INV-2")])
    run = Execution.objects.create(tenant_id=job.tenant_id, job=job)
    reconciliation_jobs.run_execution.run_now({"execution_id": run.pk})
    run.refresh_from_db()
    first, second = Match.objects.filter(job_id=job.pk).order_by("id")
    review_services.match_reject(match_id=second.id, tenant_ids=[job.tenant_id], note="different invoices")
    refresh_all()
    tenants = [job.tenant_id]

    days = daily_summary(tenant_ids=tenants)["rows"]
    performance = job_performance(tenant_ids=tenants)["rows"]
    usage = tenant_usage_hourly(tenant_ids=tenants, since=run.created_at - H)["rows"]
    accuracy = match_accuracy(tenant_ids=tenants)["rows"]

    assert run.status == "succeeded" and run.summary["match_rate"] == 0.8  # 4 of 5 records, before the rejection
    assert sum(day["executions"] for day in days) == 1
    assert sum(day["matches"] for day in days) == 1  # the rejected one matched nothing
    assert (
        sum(day["matched_records"] for day in days)
        == Record.objects.filter(job=job, matched__isnull=False).count()
        == 2
    )
    # L3 by the run, L2 and R2 by the rejection.
    assert sum(day["exceptions"] for day in days) == ReconciliationException.objects.filter(job_id=job.pk).count() == 3
    assert (performance[0]["avg_match_rate"], performance[0]["last_match_rate"]) == (Decimal("0.8000"), Decimal("0.8"))
    assert sum(hour["records_ingested"] for hour in usage) == 5
    assert sum(hour["matches_created"] for hour in usage) == 2
    assert (accuracy[0]["reviewed"], accuracy[0]["rejected"], accuracy[0]["accuracy"]) == (1, 1, Decimal("0.0000"))
    assert first.status == "auto"


# ---- tenant scoping ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "read",
    [
        lambda tenant_ids, t: daily_summary(tenant_ids=tenant_ids),
        lambda tenant_ids, t: job_performance(tenant_ids=tenant_ids),
        lambda tenant_ids, t: tenant_usage_hourly(tenant_ids=tenant_ids, since=t - 60 * D),
        lambda tenant_ids, t: match_accuracy(tenant_ids=tenant_ids),
    ],
    ids=VIEWS,
)
def test_a_tenant_sees_only_its_own_rows(world, read):
    refresh_all()
    a, b, t = world["a"], world["b"], world["t"]

    rows_a, rows_b = read([a.pk], t)["rows"], read([b.pk], t)["rows"]

    assert rows_a and rows_b
    assert {row["tenant_id"] for row in rows_a} == {a.pk}
    assert {row["tenant_id"] for row in rows_b} == {b.pk}
    assert read([], t)["rows"] == []


def test_a_job_moved_to_another_tenant_is_not_shown_under_its_old_one(world):
    """Rows join the job on (id, tenant): a view row that disagrees with the job table is hidden."""
    refresh_all()
    a, b, a1 = world["a"], world["b"], world["a1"]
    ReconciliationJob.objects.filter(pk=a1.pk).update(tenant=b)

    assert [row for row in daily_summary(tenant_ids=[a.pk, b.pk])["rows"] if row["job_id"] == a1.pk] == []


# ---- refreshes -----------------------------------------------------------------------------------


def test_every_view_has_a_unique_index_led_by_tenant_id(db):
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT t.relname, array_agg(a.attname ORDER BY k.ord)
            FROM pg_index x
            JOIN pg_class t ON t.oid = x.indrelid
            CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
            JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
            WHERE t.relname = ANY(%s) AND t.relkind = 'm' AND x.indisunique AND x.indpred IS NULL
            GROUP BY x.indexrelid, t.relname
            """,
            [VIEWS],
        )
        unique = dict(cursor.fetchall())
    assert unique == {
        SUMMARY_DAILY: ["tenant_id", "job_id", "day"],
        JOB_PERFORMANCE: ["tenant_id", "job_id"],
        TENANT_USAGE_HOURLY: ["tenant_id", "hour"],
        MATCH_ACCURACY: ["tenant_id", "job_id"],
    }


@pytest.mark.parametrize("name", VIEWS)
def test_tenant_scoped_reads_use_the_unique_index(db, name):
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN (FORMAT JSON) SELECT * FROM {name} WHERE tenant_id = ANY(%s)", [[1, 2]])
        plan = json.dumps(cursor.fetchone()[0])
        transaction.set_rollback(True)
    assert f"{name.replace('mv_reconciliation_', 'mv_recon_')}_uniq" in plan
    assert "tenant_id = ANY" in plan


@pytest.mark.parametrize("name", VIEWS)
def test_refresh_runs_concurrently_and_is_recorded(world, name):
    refresh = refresh_materialized_view(name)

    assert (refresh.view_name, refresh.status, refresh.concurrently) == (name, "ok", True)
    assert MaterializedViewRefresh.objects.filter(view_name=name, status="ok").count() == 1


def test_a_read_says_when_its_view_was_last_refreshed(world):
    a = world["a"]
    never = job_performance(tenant_ids=[a.pk])
    assert (never["refreshed_at"], never["stale"]) == (None, True)
    assert never["rows"] == []  # the view holds what it held when the migration created it

    refresh = refresh_materialized_view(JOB_PERFORMANCE)
    result = job_performance(tenant_ids=[a.pk])

    assert result["refreshed_at"] == refresh.finished_at
    assert (result["view"], result["refresh_every_s"], result["window_days"], result["stale"]) == (
        JOB_PERFORMANCE, 3600, 90, False
    )  # fmt: skip
    assert len(result["rows"]) == 2


def test_refresh_time_is_known_even_with_no_rows(db):
    refresh = refresh_materialized_view(MATCH_ACCURACY)

    result = match_accuracy(tenant_ids=[123456])

    assert (result["rows"], result["refreshed_at"]) == ([], refresh.finished_at)


def test_a_failed_refresh_does_not_count_as_fresh(world):
    ok = refresh_materialized_view(TENANT_USAGE_HOURLY)
    MaterializedViewRefresh.objects.create(
        view_name=TENANT_USAGE_HOURLY, started_at=ok.finished_at + S, finished_at=ok.finished_at + 2 * S,
        duration_ms=1000, status="failed", error="canceling statement due to statement timeout",
    )  # fmt: skip

    assert tenant_usage_hourly(tenant_ids=[world["a"].pk], since=world["t"])["refreshed_at"] == ok.finished_at


@pytest.mark.parametrize(
    "read",
    [
        lambda t: daily_summary(tenant_ids=[1, 2], job_id=3, since=t.date()),
        lambda t: job_performance(tenant_ids=[1, 2]),
        lambda t: tenant_usage_hourly(tenant_ids=[1, 2], since=t),
        lambda t: match_accuracy(tenant_ids=[1, 2]),
    ],
    ids=VIEWS,
)
def test_each_read_is_one_query(world, django_assert_num_queries, read):
    with django_assert_num_queries(1):
        read(world["t"])


def test_the_scheduled_job_refreshes_a_view_by_name(world):
    result = refresh_materialized_view_job.run_now({"name": SUMMARY_DAILY})

    assert (result["view"], result["concurrently"]) == (SUMMARY_DAILY, True)
    assert JobRun.objects.get(name="project.refresh_materialized_view").status == JobRun.Status.SUCCEEDED
    assert len(daily_summary(tenant_ids=[world["a"].pk])["rows"]) == 2


def test_every_view_is_registered_with_its_period_and_watched(db):
    registered = {view.name: view.refresh_every_s for view in registered_materialized_views()}
    assert {name: registered.get(name) for name in VIEWS} == {
        SUMMARY_DAILY: 3600,
        JOB_PERFORMANCE: 3600,
        TENANT_USAGE_HOURLY: 900,
        MATCH_ACCURACY: 86400,
    }
    status = {row["name"]: row for row in materialized_view_status()}
    assert all(status[name]["exists"] and status[name]["populated"] for name in VIEWS)


def test_every_view_has_a_refresh_schedule_on_the_maintenance_queue():
    schedules = {s.kwargs.get("name"): s for s in SCHEDULES if s.job == "project.refresh_materialized_view"}

    assert {name: (schedules[name].queue, schedules[name].crontab) for name in VIEWS} == {
        SUMMARY_DAILY: ("maintenance", {"minute": "5"}),
        JOB_PERFORMANCE: ("maintenance", {"minute": "10"}),
        TENANT_USAGE_HOURLY: ("maintenance", {"minute": "*/15"}),
        MATCH_ACCURACY: ("maintenance", {"minute": "20", "hour": "3"}),
    }
    # A run still queued after its period is superseded by the next one.
    view_periods = {view.name: view.refresh_every_s for view in analytics.ANALYTICS_VIEWS}
    assert all(schedules[name].expires_s <= view_periods[name] for name in VIEWS)


# ---- serializers ---------------------------------------------------------------------------------


def test_outputs_render_rates_as_numbers_and_money_as_strings(world):
    refresh_all()
    a, t = world["a"], world["t"]

    summary = DailySummarySerializer(daily_summary(tenant_ids=[a.pk], since=t.date())).data
    performance = JobPerformanceSerializer(job_performance(tenant_ids=[a.pk])).data
    usage = TenantUsageHourlySerializer(tenant_usage_hourly(tenant_ids=[a.pk], since=t)).data
    accuracy = MatchAccuracySerializer(match_accuracy(tenant_ids=[a.pk])).data

    assert (summary["view"], summary["window_days"], summary["stale"]) == (SUMMARY_DAILY, 90, False)
    day = summary["rows"][0]
    assert (day["day"], day["match_rate"], day["amount_open"]) == (t.date().isoformat(), 0.8571, "7.2500")
    assert performance["rows"][0]["p95_duration_s"] == 29.0 and performance["rows"][1]["success_rate"] is None
    assert usage["window_days"] == 30 and usage["rows"][0]["records_ingested"] == 3
    assert accuracy["rows"][0]["accuracy"] == 0.75
    assert accuracy["rows"][0]["by_pass"]["tolerance"]["accuracy"] == 0.6667


@pytest.mark.parametrize(
    "params, error_field",
    [
        ({"job": "0"}, "job"),
        ({"job": "x"}, "job"),
        ({"since": "2026-13-01"}, "since"),
        ({"since": "2999-01-01"}, "since"),
    ],
)
def test_daily_summary_query_rejects_bad_parameters(params, error_field):
    query = DailySummaryQuerySerializer(data=params)
    assert not query.is_valid()
    assert error_field in query.errors


def test_usage_query_defaults_to_the_last_24_hours_and_rejects_bad_since():
    query = TenantUsageQuerySerializer(data={})
    assert query.is_valid()
    age = datetime.datetime.now(datetime.UTC) - query.validated_data["since"]
    assert datetime.timedelta(hours=23, minutes=59) < age < datetime.timedelta(hours=24, minutes=1)
    for bad in ("yesterday", "2999-01-01T00:00:00Z"):
        query = TenantUsageQuerySerializer(data={"since": bad})
        assert not query.is_valid() and "since" in query.errors
