"""The task admin: constant query count, full-text search, the bulk status actions, big-table paging."""

import json

import pytest
from django.contrib.admin.views.main import ChangeList
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import resolve, reverse
from django.utils import timezone

from project.admin import EstimatedCountPaginator
from project.models import ActivityLog, JobRun
from tasks.models import Task
from tests.factories import TaskFactory, UserFactory

pytestmark = pytest.mark.django_db

TASK_CHANGELIST = reverse("admin:tasks_task_changelist")


@pytest.fixture
def superuser():
    return UserFactory(is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client(client, superuser):
    client.force_login(superuser)
    return client


def listed(response) -> list[Task]:
    changelist: ChangeList = response.context["cl"]
    return list(changelist.result_list)


def test_task_changelist_query_count_does_not_grow_with_rows(admin_client, superuser):
    TaskFactory.create_batch(5, assignee=superuser)
    cache.clear()  # the header's pending badge is cached: measure both pages from a cold cache
    with CaptureQueriesContext(connection) as five:
        response_five = admin_client.get(TASK_CHANGELIST)
    TaskFactory.create_batch(20, assignee=superuser)
    cache.clear()
    with CaptureQueriesContext(connection) as twenty_five:
        response_twenty_five = admin_client.get(TASK_CHANGELIST)

    assert response_five.status_code == 200
    assert response_twenty_five.status_code == 200
    assert len(listed(response_five)) == 5
    assert len(listed(response_twenty_five)) == 25
    # Project and assignee come with the rows (list_select_related), not one query per row.
    assert len(twenty_five.captured_queries) == len(five.captured_queries)


def test_task_changelist_search_finds_a_word_only_in_one_description_full_text(admin_client):
    wanted = TaskFactory(title="Quarter close", description="Chase the zeppelin hangar lease.")
    TaskFactory.create_batch(3)

    # Full-text, not ILIKE on the title: the word is only in a description, and "zeppelins"
    # matches "zeppelin" only because both stem to the same lexeme.
    by_word = admin_client.get(TASK_CHANGELIST, {"q": "zeppelin"})
    by_plural = admin_client.get(TASK_CHANGELIST, {"q": "zeppelins"})

    assert by_word.status_code == 200
    assert [task.pk for task in listed(by_word)] == [wanted.pk]
    assert [task.pk for task in listed(by_plural)] == [wanted.pk]


def test_mark_done_action_completes_selected_tasks_and_records_activity(admin_client, superuser):
    selected = TaskFactory.create_batch(2, status=Task.Status.IN_PROGRESS)
    untouched = TaskFactory(status=Task.Status.IN_PROGRESS)

    response = admin_client.post(
        TASK_CHANGELIST, {"action": "mark_done", "_selected_action": [task.pk for task in selected]}
    )

    assert response.status_code == 302
    for task in selected:
        task.refresh_from_db()
        assert task.status == Task.Status.DONE
        assert task.completed_at is not None
    untouched.refresh_from_db()
    assert untouched.status == Task.Status.IN_PROGRESS
    assert untouched.completed_at is None
    # One act, one row: it lists the tasks it changed.
    (logged,) = ActivityLog.objects.filter(action="task.bulk_update")
    assert sorted(logged.metadata["ids"]) == sorted(task.pk for task in selected)
    assert (logged.user_id, logged.category, logged.metadata["changes"]["status"]) == (superuser.pk, "tasks", "done")


def test_jobrun_changelist_loads(admin_client):
    JobRun.objects.create(
        name="project.maintain_partitions", status=JobRun.Status.SUCCEEDED, started_at=timezone.now(), duration_ms=12
    )

    response = admin_client.get(reverse("admin:project_jobrun_changelist"))

    assert response.status_code == 200
    assert [run.name for run in response.context["cl"].result_list] == ["project.maintain_partitions"]


def test_estimated_count_paginator_counts_a_small_table_exactly():
    TaskFactory.create_batch(12)

    assert EstimatedCountPaginator(Task.objects.order_by("pk"), per_page=10).count == 12


def test_estimated_count_paginator_reads_the_estimate_only_for_big_unfiltered_lists():
    TaskFactory.create_batch(9, status=Task.Status.TODO)
    TaskFactory.create_batch(3, status=Task.Status.DONE)
    # Pretend ANALYZE saw a big table; the test transaction rolls this back.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE pg_class SET reltuples = 50000 WHERE oid = %s::regclass", [Task._meta.db_table])

    assert EstimatedCountPaginator(Task.objects.order_by("pk"), per_page=10).count == 50_000
    assert EstimatedCountPaginator(Task.objects.filter(status=Task.Status.TODO).order_by("pk"), per_page=10).count == 9


def test_estimated_count_paginator_stops_counting_a_filtered_list_past_its_exact_limit(monkeypatch):
    TaskFactory.create_batch(9, status=Task.Status.TODO)
    monkeypatch.setattr(EstimatedCountPaginator, "EXACT_COUNT_LIMIT", 5)
    todo = Task.objects.filter(status=Task.Status.TODO).order_by("pk")
    planner_estimate = json.loads(todo.order_by().explain(format="json"))[0]["Plan"]["Plan Rows"]

    with CaptureQueriesContext(connection) as queries:
        count = EstimatedCountPaginator(todo, per_page=10).count

    # The exact count stopped at 6 rows; past the limit the total is the planner's estimate.
    assert "LIMIT 6" in queries.captured_queries[0]["sql"]
    assert count == max(6, planner_estimate)


@pytest.mark.parametrize("title", ["Plain", "Quotes \" and ' and <b>tags</b> & ampersands", "Ünïcödé ✓"])
def test_action_checkbox_is_the_markup_django_renders(title):
    from django.contrib import admin

    task = TaskFactory(title=title)
    task_admin = admin.site._registry[Task]

    assert task_admin.action_checkbox(task) == admin.ModelAdmin.action_checkbox(task_admin, task)


@pytest.mark.parametrize("query", [{}, {"status__exact": "todo", "q": "invoice"}])
def test_big_table_changelist_rows_are_the_markup_djangos_changelist_renders(rf, superuser, query):
    from django.contrib import admin
    from django.contrib.admin.templatetags.admin_list import results
    from django.contrib.admin.views.main import ChangeList

    TaskFactory.create_batch(3, status=Task.Status.TODO, title="Invoice review")
    task_admin = admin.site._registry[Task]
    request = rf.get(TASK_CHANGELIST, query)
    request.user, request.resolver_match = superuser, resolve(TASK_CHANGELIST)

    def rows(changelist_class):
        task_admin.get_changelist = lambda request, **kwargs: changelist_class
        try:
            changelist = task_admin.get_changelist_instance(request)
        finally:
            del task_admin.get_changelist
        changelist.formset = None  # as changelist_view sets it without list_editable
        return [list(row) for row in results(changelist)]

    ours, djangos = rows(type(task_admin).get_changelist(task_admin, request)), rows(ChangeList)

    assert len(ours) == 3
    assert ours == djangos
    if query:  # each row links back to the filtered list
        assert "?_changelist_filters=" in "".join(ours[0])
