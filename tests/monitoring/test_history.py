"""History: minute samples (pruned after 14 days by retention), counter snapshots written only on change, and
the p95 and error rate of the last minute from the Prometheus histograms every process records."""

from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring import history
from monitoring.models import IndexUsageSnapshot, MetricSample, StatementSnapshot

pytestmark = pytest.mark.django_db


def test_sampling_stores_the_key_figures_and_retention_prunes_old_samples(settings):
    from project.retention import apply_retention

    old = MetricSample.objects.create(
        taken_at=timezone.now() - timedelta(days=settings.MONITORING_HISTORY_DAYS, minutes=1), name="x", value=1
    )
    history.sample_metrics()
    names = set(MetricSample.objects.values_list("name", flat=True))
    assert {"db.cache_hit", "db.connections", "celery.queue_depth", "backlog.approvals_pending"} <= names
    assert {"system.cpu_percent", "recon.executions", "db.size_bytes"} <= names
    assert MetricSample.objects.filter(pk=old.pk).exists()  # sampling itself no longer prunes
    result = apply_retention()
    assert result["tables"]["monitoring.MetricSample"]["rows"] == 1
    assert not MetricSample.objects.filter(pk=old.pk).exists()


@pytest.mark.usefixtures("with_pg_stat_statements")
def test_counter_snapshots_are_written_only_when_counters_move():
    first = history.snapshot_counters()
    assert first["indexes"] == IndexUsageSnapshot.objects.count() > 0
    assert first["statements"] == StatementSnapshot.objects.count() > 0
    again = history.snapshot_counters()
    assert again["indexes"] == 0  # nothing scanned an index in between


def test_quantile_from_cumulative_buckets_interpolates_like_prometheus():
    buckets = {0.01: 50.0, 0.1: 90.0, 1.0: 100.0, float("inf"): 100.0}
    assert history.quantile_from_buckets(buckets, 0.5) == pytest.approx(0.01)
    assert history.quantile_from_buckets(buckets, 0.95) == pytest.approx(0.1 + 0.9 * 0.5)
    assert history.quantile_from_buckets({0.1: 0.0, float("inf"): 0.0}, 0.95) is None


def test_request_figures_are_the_last_minute_not_the_lifetime(monkeypatch):
    from prometheus_client import CollectorRegistry, Counter, Histogram

    registry = CollectorRegistry()
    queries = Histogram("django_db_query_duration_seconds", "q", buckets=(0.01, 0.1, 1.0), registry=registry)
    responses = Counter(
        "django_http_responses_total_by_status_view_method", "r", ["status", "view", "method"], registry=registry
    )
    monkeypatch.setattr("project.metrics.metrics_registry", lambda: registry)
    for _ in range(100):
        queries.observe(0.5)  # a slow past, before the previous sample
    responses.labels("500", "v", "GET").inc(100)
    assert history.request_figures() == {}  # the first sample only sets the baseline
    for _ in range(100):
        queries.observe(0.005)
    responses.labels("200", "v", "GET").inc(99)
    responses.labels("500", "v", "GET").inc(1)
    figures = history.request_figures()
    assert figures["db.query_p95_ms"] < 10
    assert figures["http.requests"] == 100
    assert figures["http.error_rate"] == pytest.approx(0.01)


def test_route_p95_is_per_view_over_the_minute_for_the_busiest_views(monkeypatch, settings):
    from prometheus_client import CollectorRegistry, Histogram

    settings.MONITORING_ROUTES_SHOWN = 2
    registry = CollectorRegistry()
    latency = Histogram(
        "django_http_requests_latency_seconds_by_view_method",
        "l",
        ["view", "method"],
        buckets=(0.01, 0.1, 1.0),
        registry=registry,
    )
    monkeypatch.setattr("project.metrics.metrics_registry", lambda: registry)
    for _ in range(50):
        latency.labels("tasks.list", "GET").observe(0.5)  # before the baseline: not this minute's
    history.request_figures()
    for _ in range(100):
        latency.labels("tasks.list", "GET").observe(0.005)
    for _ in range(20):
        latency.labels("tasks.detail", "GET").observe(0.5)
    latency.labels("health", "GET").observe(0.005)  # the third busiest: not kept
    routes = history.request_figures()["routes"]
    assert list(routes) == ["tasks.list", "tasks.detail"]
    assert routes["tasks.list"]["requests"] == 100
    assert routes["tasks.list"]["p95_ms"] < 10
    assert 100 < routes["tasks.detail"]["p95_ms"] <= 1000


def test_route_latency_reads_requests_the_latest_and_the_worst_p95_of_the_window():
    now = timezone.now().replace(second=0, microsecond=0)
    figures = {
        "requests": {"http.requests": 3, "routes": {"tasks.list": {"requests": 10, "p95_ms": 40.0}}},
    }
    MetricSample.objects.bulk_create(history.samples_from_figures(figures, now - timedelta(minutes=2)))
    figures["requests"]["routes"]["tasks.list"] = {"requests": 5, "p95_ms": 20.0}
    MetricSample.objects.bulk_create(history.samples_from_figures(figures, now - timedelta(minutes=1)))
    MetricSample.objects.create(taken_at=now - timedelta(hours=2), name="http.route_p95_ms", key="old", value=9)
    [route] = history.route_latency(hours=1, now=now)
    assert route["route"] == "tasks.list"
    assert route["requests"] == 15
    assert route["p95_ms"] == 20.0 and route["worst_p95_ms"] == 40.0
    assert MetricSample.objects.filter(name="http.requests").count() == 2


def test_chart_series_are_bucketed_and_show_gaps_where_no_sample_was_taken():
    now = timezone.now().replace(second=0, microsecond=0)
    for minutes_ago in (180, 179, 178, 2, 1):  # the sampler stopped for almost three hours
        MetricSample.objects.create(
            taken_at=now - timedelta(minutes=minutes_ago), name="pool.usage_ratio", key="a", value=0.5
        )
    points = history.series(["pool.usage_ratio"], hours=24, now=now)["pool.usage_ratio"]["a"]
    assert len(points) <= history.CHART_POINTS
    values = [value for _, value in points]
    assert None in values  # the line breaks over the gap
    assert values[0] == 0.5 and values[-1] == 0.5


def _statement(sql_text: str, like: str, times: int) -> dict:
    """Run a statement and read its pg_stat_statements row (run again if the server's shared,
    full statistics evicted the fresh entry in between)."""
    import time

    from django.db import connection

    deadline = time.monotonic() + 10
    with connection.cursor() as cursor:
        while True:
            for _ in range(times):
                cursor.execute(sql_text)
            cursor.execute(
                "SELECT queryid, userid::bigint, dbid::bigint, calls, total_exec_time, rows, shared_blks_hit, "
                "shared_blks_read FROM pg_stat_statements WHERE query LIKE %s "
                "AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
                [like],
            )
            row = cursor.fetchone()
            if row is not None or time.monotonic() > deadline:
                assert row is not None
                return dict(zip([c.name for c in cursor.description], row, strict=True))


@pytest.mark.usefixtures("with_pg_stat_statements")
def test_a_window_shows_what_a_statement_did_since_its_start_not_its_lifetime():
    from monitoring.selectors.statements import slow_queries

    live = _statement(
        "SELECT count(*) FROM tasks_project WHERE id > -77", "SELECT count(*) FROM tasks_project WHERE id > %", 6
    )
    StatementSnapshot.objects.create(
        taken_at=timezone.now() - timedelta(hours=2),
        queryid=live["queryid"],
        userid=live["userid"],
        dbid=live["dbid"],
        calls=live["calls"] - 2,
        total_exec_ms=live["total_exec_time"] - 1.0,
        rows=0,
        shared_blks_hit=0,
        shared_blks_read=0,
    )
    rows = {s["queryid"]: s for s in slow_queries(order="calls", window="1h", limit=500)["statements"]}
    row = rows[live["queryid"]]
    assert row["calls"] == 2 and row["total_exec_ms"] == pytest.approx(1.0, abs=0.01)
    assert row["mean_exec_ms"] == pytest.approx(0.5, abs=0.01) and row["new_in_window"] is False
    lifetime = {s["queryid"]: s for s in slow_queries(order="calls", limit=500)["statements"]}[live["queryid"]]
    assert lifetime["calls"] == live["calls"]


@pytest.mark.usefixtures("with_pg_stat_statements")
def test_counters_below_their_snapshot_mean_statistics_were_reset():
    from monitoring.selectors.statements import window_deltas

    since = timezone.now() - timedelta(hours=1)
    live = _statement(
        "SELECT count(*) FROM tasks_project WHERE id > -78", "SELECT count(*) FROM tasks_project WHERE id > %", 3
    )
    StatementSnapshot.objects.create(
        taken_at=since - timedelta(minutes=5),
        queryid=live["queryid"],
        userid=live["userid"],
        dbid=live["dbid"],
        calls=live["calls"] + 100,
        total_exec_ms=live["total_exec_time"] + 100,
        rows=0,
        shared_blks_hit=0,
        shared_blks_read=0,
    )
    row = {
        "queryid": live["queryid"],
        "userid": live["userid"],
        "dbid": live["dbid"],
        "calls": live["calls"],
        "total_exec_ms": live["total_exec_time"],
        "mean_exec_ms": 0.0,
        "rows": 0,
        "shared_blks_hit": 0,
        "shared_blks_read": 0,
    }
    (delta,) = window_deltas([row], since)
    assert delta["calls"] == live["calls"]  # counted from zero, not negative


@pytest.mark.usefixtures("with_pg_stat_statements")
def test_statements_are_grouped_by_the_view_or_job_that_issued_them():
    from monitoring.selectors.statements import slow_queries
    from project.db.attribution import sql_origin

    with sql_origin(view="tests.MonitoringProbe.get"):
        # A statement shape no other test runs: pg_stat_statements keeps the text (and so the
        # origin) of a statement's first execution.
        live = _statement(
            "SELECT min(id), max(name) FROM tasks_project WHERE name <> 'probe'",
            "%SELECT min(id), max(name) FROM tasks_project WHERE name <> %",
            4,
        )
    data = slow_queries(order="calls", limit=500)
    row = next(s for s in data["statements"] if s["queryid"] == live["queryid"])
    assert row["origin"] == "view=tests.MonitoringProbe.get"
    assert "opsdeck:" not in row["query"]  # the comment is parsed out, not shown twice
    group = next(g for g in data["by_origin"] if g["origin"] == "view=tests.MonitoringProbe.get")
    assert group["calls"] >= 4 and group["statements"] >= 1


def test_index_history_of_a_partitioned_index_adds_up_its_partitions():
    from django.db import connection

    history.snapshot_counters(now=timezone.now() - timedelta(days=8))  # baselines before the window
    with connection.cursor() as cursor:  # pretend two partitions' indexes were scanned since
        cursor.execute(
            f"UPDATE {IndexUsageSnapshot._meta.db_table} SET idx_scan = idx_scan - 5 "
            "WHERE index ~ '^project_activitylog_[0-9]{4}_[0-9]{2}_created_at_idx$'"
        )
    since = history.index_scans_since(timezone.now() - timedelta(days=7))
    parts = IndexUsageSnapshot.objects.filter(
        index__regex=r"^project_activitylog_[0-9]{4}_[0-9]{2}_created_at_idx$"
    ).count()
    assert parts >= 2
    assert since[("public", "activity_created_desc_idx")]["scans_in_window"] == 5 * parts
    assert since[("public", "activity_created_desc_idx")]["first_seen_at"] is not None
