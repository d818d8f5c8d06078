"""Every index on tasks.Task serves the query it exists for.

Each test builds the queryset the app really runs (selectors, the API's filters, the cursor
paginator's seek) and reads its plan with EXPLAIN inside a savepoint that runs
`SET LOCAL enable_seqscan = off`. The test table holds a handful of rows, on which a sequential
scan is always cheapest; switching it off makes PostgreSQL show which index *can* serve the query,
which is what these tests assert (not what it would pick on production-sized data). The savepoint
is rolled back, so the setting (and any index dropped to prove a point) does not outlive the plan.

On a table this small PostgreSQL may read any index whole as a stand-in for the disabled
sequential scan, so each test keeps only the index under test (the others are dropped in the
rolled-back savepoint) and asserts that the query's condition is that index's Index Cond.
"""

import datetime as dt

import pytest
from django.db import connection
from django.utils import timezone

from project.db.expressions import InArray, RowComparison
from tasks import selectors
from tasks.models import Task
from tests.factories import TaskFactory, UserFactory
from tests.plans import index_scans, scan_on

pytestmark = pytest.mark.django_db


@pytest.fixture
def assignee():
    user = UserFactory()
    now = timezone.now()
    TaskFactory(assignee=user, deadline=now - dt.timedelta(days=1), tags=["finance"])
    TaskFactory(assignee=user, status=Task.Status.DONE, deadline=now + dt.timedelta(days=2))
    TaskFactory(description="Send the invoice.", priority=Task.Priority.HIGH)
    return user


def test_every_task_index_has_a_plan_test():
    # A new index needs a test here naming the query it serves (STYLE.md: "every index has a reason").
    tested = {
        "task_created_id_idx",
        "task_priority_idx",
        "task_deadline_idx",
        "task_assignee_status_idx",
        "task_status_priority_idx",
        "task_open_deadline_idx",
        "task_tags_gin",
        "task_search_gin",
    }
    assert {index.name for index in Task._meta.indexes} == tested


def test_cursor_page_seeks_with_a_row_comparison_index_condition(assignee):
    newest = Task.objects.order_by("-created_at", "-id").first()
    page = Task.objects.filter(RowComparison(["created_at", "id"], "<", [newest.created_at, newest.pk])).order_by(
        "-created_at", "-id"
    )[:51]

    scan = scan_on(index_scans(page, only="task_created_id_idx"), "task_created_id_idx")

    # The seek is an index condition (a range start), not a filter applied to every row read:
    # the expanded `a < x OR (a = x AND b < y)` form would not appear as one ROW() condition.
    assert scan.index_cond.startswith("(ROW(created_at, id) < ROW(")


def test_id_list_is_one_array_parameter_served_by_the_primary_key(assignee):
    # Search hands its candidate ids (up to 1,000) to the ranking query as one array, not one
    # placeholder per id; the cast to bigint keeps the primary key usable.
    ids = list(Task.objects.values_list("pk", flat=True))
    page = Task.objects.filter(InArray("pk", [ids[0], ids[-1]]))

    sql, params = page.query.sql_with_params()
    scan = scan_on(index_scans(page, only="tasks_task_pkey"), "tasks_task_pkey")

    assert params == (f"{{{ids[0]},{ids[-1]}}}",)
    assert "= ANY(%s::bigint[])" in sql
    assert "ANY" in scan.index_cond
    assert sorted(page.values_list("pk", flat=True)) == sorted([ids[0], ids[-1]])


def test_id_list_rejects_what_is_not_an_integer():
    with pytest.raises(ValueError):
        InArray("pk", ["1}, {2"])


def test_status_filter_is_served_by_the_status_priority_index_prefix(assignee):
    # No separate (status) index: it would duplicate the prefix of (status, priority).
    scan = scan_on(
        index_scans(Task.objects.filter(status=Task.Status.TODO), only="task_status_priority_idx"),
        "task_status_priority_idx",
    )

    assert "status" in scan.index_cond


def test_assignee_foreign_key_has_no_index_of_its_own():
    # (assignee, status) serves assignee lookups as its prefix; a second index would duplicate it.
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, Task._meta.db_table)
    single_column = [info["columns"] for info in constraints.values() if info["index"] and not info["primary_key"]]
    assert ["assignee_id"] not in single_column
    assert ["status"] not in single_column
    assert ["assignee_id", "status"] in single_column


def test_priority_filter_uses_task_priority_idx(assignee):
    scan = scan_on(
        index_scans(Task.objects.filter(priority=Task.Priority.HIGH), only="task_priority_idx"), "task_priority_idx"
    )

    assert "priority" in scan.index_cond


def test_deadline_range_over_all_tasks_uses_task_deadline_idx(assignee):
    now = timezone.now()
    queryset = Task.objects.filter(deadline__gte=now, deadline__lt=now + dt.timedelta(days=7))

    scan = scan_on(index_scans(queryset, only="task_deadline_idx"), "task_deadline_idx")

    assert "deadline >=" in scan.index_cond
    assert "deadline <" in scan.index_cond


def test_assignee_and_status_filter_is_served_by_task_assignee_status_idx(assignee):
    queryset = Task.objects.filter(assignee_id=assignee.pk, status=Task.Status.TODO)

    scan = scan_on(index_scans(queryset, only="task_assignee_status_idx"), "task_assignee_status_idx")

    # Both columns are index conditions, not one condition and a filter.
    assert "assignee_id =" in scan.index_cond
    assert "status" in scan.index_cond


def test_status_and_priority_filter_uses_task_status_priority_idx(assignee):
    queryset = Task.objects.filter(status=Task.Status.TODO, priority=Task.Priority.HIGH)

    scan = scan_on(index_scans(queryset, only="task_status_priority_idx"), "task_status_priority_idx")

    assert "status" in scan.index_cond
    assert "priority" in scan.index_cond


def test_overdue_selector_uses_the_partial_open_deadline_index(assignee):
    queryset = selectors.tasks_overdue(Task.objects.all(), True)

    scan = scan_on(index_scans(queryset, only="task_open_deadline_idx"), "task_open_deadline_idx")

    # The status list is implied by the index predicate, so only the deadline is a condition.
    assert "deadline <" in scan.index_cond


def test_tag_filter_uses_the_jsonb_path_ops_gin_index(assignee):
    # The API's ?tag= filter (TaskFilter.filter_tag).
    scan = scan_on(
        index_scans(Task.objects.filter(tags__contains=["finance"]), bitmap_only=True, only="task_tags_gin"),
        "task_tags_gin",
    )

    assert "tags @>" in scan.index_cond


def test_full_text_search_selector_uses_task_search_gin(assignee):
    queryset = selectors.task_search(selectors.task_list(), "invoice")

    scan = scan_on(index_scans(queryset, bitmap_only=True, only="task_search_gin"), "task_search_gin")

    assert "search_vector @@" in scan.index_cond
