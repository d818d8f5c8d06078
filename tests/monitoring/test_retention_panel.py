"""The cockpit's Retention page and its endpoint: every registered table, what it keeps, the last
run's rows and the oldest row still waiting."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from project.models import JobRun
from project.retention import apply_retention

pytestmark = pytest.mark.django_db


def _old_runs(count: int, days_ago: int) -> None:
    JobRun.objects.bulk_create(
        JobRun(name="test.panel", status="succeeded", started_at=timezone.now() - timedelta(days=days_ago + i))
        for i in range(count)
    )


def test_the_page_shows_each_table_its_policy_and_a_table_left_behind(viewer, login, settings):
    settings.RETENTION_OVERRIDES = {"project.JobRun": {"batch_size": 2}}
    _old_runs(3, days_ago=40)
    apply_retention(max_batches=1)

    body = login(viewer).get(reverse("admin:monitoring_retention")).content.decode()

    assert 'id="retention-project_jobrun"' in body and 'id="retention-monitoring_metricsample"' in body
    row = body[body.index('id="retention-project_jobrun"') :].split("</tr>", 1)[0]
    assert "archive" in row and "30 days" in row and "batch 2" in row
    assert "runs still running or retrying" in row
    assert "2 rows in 1 batch" in row and "behind" in row


def test_the_endpoint_gives_the_same_figures(viewer, login):
    _old_runs(1, days_ago=31)
    apply_retention()
    body = login(viewer).get("/api/v1/database/performance/retention").json()
    jobrun = next(t for t in body["tables"] if t["model"] == "project.JobRun")
    assert body["last_run_at"] is not None
    assert jobrun | {"oldest_prunable_age_s": None} == {
        "model": "project.JobRun",
        "table": "project_jobrun",
        "mode": "archive",
        "business": False,
        "enabled": True,
        "keep_days": 30,
        "batch_size": 1000,
        "age_field": "started_at",
        "kept": "runs still running or retrying, and every run of the last 30 days",
        "last_rows": 1,
        "last_batches": 1,
        "oldest_prunable_age_s": None,
        "behind": False,
        "error": "",
    }


def test_before_any_run_the_page_says_never(viewer, login):
    body = login(viewer).get(reverse("admin:monitoring_retention")).content.decode()
    assert "<strong>never</strong>" in body
