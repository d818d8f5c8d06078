"""Every cockpit page renders real figures for a user with monitoring.view_dashboard, and is
refused without it."""

import json
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.urls import reverse

from approvals.models import Version
from project.poolstats import publish_pool_stats
from tests.approvals.factories import VersionFactory
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PAGES = {
    "overview": reverse("admin:monitoring_dashboard_changelist"),
    "indexes": reverse("admin:monitoring_indexes"),
    "pool": reverse("admin:monitoring_pool"),
    "backlog": reverse("admin:monitoring_backlog"),
    "queries": reverse("admin:monitoring_queries"),
    "tables": reverse("admin:monitoring_tables"),
    "system": reverse("admin:monitoring_system"),
    "retention": reverse("admin:monitoring_retention"),
}


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_for_a_user_with_the_view_permission(page, viewer, login):
    VersionFactory.create_batch(3)
    response = login(viewer).get(PAGES[page])
    assert response.status_code == 200
    body = response.content.decode()
    assert 'class="monitoring-tabs"' in body
    assert "Performance cockpit" in body


@pytest.mark.parametrize("page", PAGES)
def test_page_is_forbidden_to_staff_without_the_permission(page, login):
    response = login(UserFactory(is_staff=True)).get(PAGES[page])
    assert response.status_code == 403


@pytest.mark.parametrize("page", PAGES)
def test_page_sends_anonymous_visitors_to_the_login(page, client):
    response = client.get(PAGES[page])
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_admin_index_links_the_cockpit_for_viewers_only(viewer, login):
    link = reverse("admin:monitoring_dashboard_changelist")
    assert link in login(viewer).get(reverse("admin:index")).content.decode()
    assert link not in login(UserFactory(is_staff=True)).get(reverse("admin:index")).content.decode()


def test_overview_shows_statuses_figures_and_recommendations(viewer, login):
    VersionFactory.create_batch(25)  # over the guide's target of 20: amber
    body = login(viewer).get(PAGES["overview"]).content.decode()
    assert "Database" in body and "Redis" in body and "Broker" in body and "Workers" in body
    assert "Pending approvals" in body
    assert "Pending approvals is 25 (target &lt; 20 (red &gt; 50))." in body
    assert 'badge status-amber">amber' in body


def test_backlog_page_shows_pending_ages_queues_beat_jobs_and_reconciliation(viewer, login):
    VersionFactory.create_batch(4)
    response = login(viewer).get(PAGES["backlog"])
    backlog = response.context["data"]
    assert backlog["approvals"]["count"] == Version.objects.filter(status="pending").count() == 4
    assert backlog["approvals"]["oldest_age_s"] >= backlog["approvals"]["p95_age_s"] >= 0
    assert {q["queue"] for q in backlog["queues"]["queues"]} >= {"default", "automation", "maintenance"}
    assert {job["job"] for job in backlog["beat_jobs"]} >= {"monitoring.sample_metrics", "approvals.run_automation"}
    body = response.content.decode()
    assert 'id="recon-table"' in body and "Webhook deliveries dead" in body


def test_pool_page_shows_the_pools_of_two_processes(viewer, login):
    publish_pool_stats()
    # A second process (a "worker") publishes its own pool's stats under the same prefix.
    env = {**os.environ, "OPSDECK_ROLE": "worker", "POOL_STATS_KEY_PREFIX": settings.POOL_STATS_KEY_PREFIX}
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from project.poolstats import publish_pool_stats; "
            "import json; print(json.dumps(publish_pool_stats()))",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    response = login(viewer).get(PAGES["pool"])
    processes = response.context["pools"]["processes"]
    assert {p["role"] for p in processes} == {"web", "worker"}
    assert len({p["pid"] for p in processes}) == 2
    body = response.content.decode()
    for p in processes:
        assert p["process"] in body


def test_pages_show_superuser_actions_only_to_superusers(viewer, superuser, login):
    action = reverse("admin:monitoring_action", args=["vacuum"])
    assert action not in login(viewer).get(PAGES["tables"]).content.decode()
    assert action in login(superuser).get(PAGES["tables"]).content.decode()


def test_charts_are_drawn_from_the_minute_samples(viewer, login):
    from monitoring.history import sample_metrics

    sample_metrics()
    body = login(viewer).get(PAGES["system"]).content.decode()
    assert "monitoring/vendor/chartjs/chart.umd.min.js" in body
    chart = json.loads(body.split('<script id="chart-system" type="application/json">')[1].split("</script>")[0])
    assert {d["label"] for d in chart["datasets"]} == {"system.cpu_percent", "system.memory_percent"}
    assert all(len(d["data"]) == 1 for d in chart["datasets"])


def test_system_page_shows_request_latency_by_route(viewer, login):
    from django.utils import timezone

    from monitoring.history import samples_from_figures
    from monitoring.models import MetricSample

    routes = {"tasks.views.TaskViewSet.list": {"requests": 120, "p95_ms": 42.5}}
    MetricSample.objects.bulk_create(samples_from_figures({"requests": {"routes": routes}}, timezone.now()))
    body = login(viewer).get(PAGES["system"]).content.decode()
    table = body.split('id="route-table"')[1].split("</table>")[0]
    assert "tasks.views.TaskViewSet.list" in table and "120" in table and "42.5 ms" in table
    chart = json.loads(body.split('<script id="chart-routes" type="application/json">')[1].split("</script>")[0])
    assert [d["label"] for d in chart["datasets"]] == ["tasks.views.TaskViewSet.list"]


@pytest.mark.usefixtures("with_pg_stat_statements")
def test_queries_page_refuses_unknown_order_gracefully(viewer, login):
    response = login(viewer).get(PAGES["queries"], {"order": "bogus", "window": "99y"})
    assert response.status_code == 200
    assert response.context["data"]["order"] == "total"


def test_a_panel_whose_catalog_read_times_out_says_so_and_the_page_still_answers(viewer, login, settings):
    """Issue 10: fall back per panel, never per page (it was a 503 for the whole page)."""
    settings.MONITORING_STATEMENT_TIMEOUT = "1ms"
    response = login(viewer).get(PAGES["indexes"])
    assert response.status_code == 200
    assert "canceling statement due to statement timeout" in response.context["panel_errors"]["data"]
    assert "could not be read in time" in response.content.decode()


def _queries_of(client, url) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def test_page_query_counts_do_not_grow_with_the_data(viewer, login):
    """No query per row: more indexes, beat jobs and job runs, the same number of queries."""
    from django.db import models
    from django.utils import timezone
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    from project.models import JobRun
    from tasks.models import Task

    client = login(viewer)
    crontab = CrontabSchedule.objects.create(minute="7")

    def add_beat_job_with_a_run(n):
        PeriodicTask.objects.create(name=f"extra {n}", task=f"monitoring.extra_{n}", crontab=crontab)
        JobRun.objects.create(name=f"monitoring.extra_{n}", status="succeeded", started_at=timezone.now())

    add_beat_job_with_a_run(0)  # one of each before counting: an empty list would skip its query
    client.get(PAGES["backlog"])  # warm caches (pending count, content types) before counting
    client.get(PAGES["indexes"])
    before = {page: _queries_of(client, PAGES[page]) for page in ("indexes", "backlog", "tables", "pool")}
    from django.db import connection

    with connection.schema_editor() as editor:
        for n in range(3):
            editor.add_index(Task, models.Index(fields=["title", "deadline"], name=f"mon_nplus1_{n}_idx"))
    for n in range(1, 4):
        add_beat_job_with_a_run(n)
    after = {page: _queries_of(client, PAGES[page]) for page in before}
    assert after == before, (before, after)


def test_worker_inspection_asks_the_answering_workers_and_is_cached_for_the_pages(viewer, login, monkeypatch):
    import project.celery
    from monitoring.selectors import backlog

    asked = []

    class Inspect:
        def __init__(self, timeout, limit=None):
            asked.append(limit)

        def ping(self):
            return {"worker@a": {"ok": "pong"}}

        def active(self):
            return {"worker@a": [{"id": "j1", "name": "approvals.run_automation", "kwargs": {}}]}

        def reserved(self):
            return {}

        def scheduled(self):
            return {"worker@a": [{"eta": "2026-11-23T21:00:00", "request": {"id": "j2", "name": "webhooks.send"}}]}

    monkeypatch.setattr(project.celery.app.control, "inspect", Inspect)
    result = backlog.celery_inspect_live(timeout_s=0.1)
    assert asked == [None, 1]  # the ping counts the workers; the rest stop at that many replies
    worker = result["workers"]["worker@a"]
    assert worker["ok"] and worker["active"][0]["name"] == "approvals.run_automation"
    assert worker["scheduled"][0] == {"id": "j2", "name": "webhooks.send", "args": "", "eta": "2026-11-23T21:00:00"}
    body = login(viewer).get(PAGES["backlog"]).content.decode()
    assert "worker@a" in body and "approvals.run_automation" in body
    assert "1 answering" in login(viewer).get(PAGES["overview"]).content.decode()


def test_queries_page_says_how_to_enable_pg_stat_statements_when_it_is_missing(viewer, login, monkeypatch):
    from monitoring.selectors import statements

    monkeypatch.setattr(statements, "statements_available", lambda cursor: False)
    body = login(viewer).get(PAGES["queries"]).content.decode()
    assert "shared_preload_libraries" in body and "CREATE EXTENSION pg_stat_statements" in body


def test_a_refused_user_costs_no_catalog_read(login, django_assert_max_num_queries):
    client = login(UserFactory(is_staff=True))
    client.get(PAGES["overview"])  # the session and user are loaded on every request; count after
    with django_assert_max_num_queries(4):  # session, user, permissions: no pg_catalog read
        assert client.get(PAGES["indexes"]).status_code == 403


def test_pending_ages_are_the_oldest_the_median_and_the_95th_percentile():
    from datetime import timedelta

    from django.utils import timezone

    from monitoring.selectors.backlog import approvals_pending

    now = timezone.now()
    versions = VersionFactory.create_batch(20)
    for minutes, version in enumerate(versions, start=1):  # ages 1..20 hours
        Version.objects.filter(pk=version.pk).update(created_at=now - timedelta(hours=minutes))
    pending = approvals_pending()
    assert pending["count"] == 20
    assert round(pending["oldest_age_s"] / 3600) == 20
    assert round(pending["p50_age_s"] / 3600) == 10  # 10 of 20 are older
    assert round(pending["p95_age_s"] / 3600) == 19  # 1 of 20 (5%) is older


def test_pool_page_reports_an_unreachable_pgbouncer_instead_of_failing(viewer, login, settings):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.PGBOUNCER_ADMIN_URL = f"postgres://pgbouncer@127.0.0.1:{port}/pgbouncer"
    response = login(viewer).get(PAGES["pool"])
    assert response.status_code == 200
    assert response.context["pgbouncer"]["configured"] and "OperationalError" in response.context["pgbouncer"]["error"]
