"""The admin date hierarchy on big tables: same buckets as Django, found through the index."""

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from project.admin import SkipScanDatesMixin
from tasks.models import Task
from tests.factories import ProjectFactory, TaskFactory


def skip_scan(queryset):
    queryset.__class__ = type("SkipScan", (SkipScanDatesMixin, type(queryset)), {})
    return queryset


@pytest.fixture
def spread_tasks(db):
    project = ProjectFactory()
    moments = [
        datetime(2024, 12, 31, 23, 59, tzinfo=UTC),
        datetime(2025, 1, 1, 0, 0, tzinfo=UTC),
        datetime(2025, 1, 1, 12, 0, tzinfo=UTC),
        datetime(2025, 3, 15, 8, 0, tzinfo=UTC),
        datetime(2026, 11, 2, 9, 30, tzinfo=UTC),
    ]
    for index, moment in enumerate(moments):
        task = TaskFactory(project=project, status="done" if index % 2 else "todo")
        Task.objects.filter(pk=task.pk).update(created_at=moment)


@pytest.mark.parametrize("kind", ["year", "month", "day"])
@pytest.mark.parametrize("status", [None, "done"])
def test_skip_scan_finds_exactly_the_buckets_django_finds(spread_tasks, kind, status):
    queryset = Task.objects.all() if status is None else Task.objects.filter(status=status)
    expected = list(queryset.datetimes("created_at", kind))
    assert skip_scan(queryset._chain()).datetimes("created_at", kind) == expected
    assert expected  # the fixture's rows are there to be found


def test_skip_scan_is_one_statement(spread_tasks):
    with CaptureQueriesContext(connection) as queries:
        skip_scan(Task.objects.all()).datetimes("created_at", "day")
    assert len(queries) == 1
    assert "WITH RECURSIVE" in queries[0]["sql"]


def test_task_changelist_date_hierarchy_drills_down(spread_tasks, admin_client):
    response = admin_client.get("/admin/tasks/task/", {"created_at__year": "2025"})
    assert response.status_code == 200
    content = response.content.decode()
    assert "created_at__month=1" in content and "created_at__month=3" in content
