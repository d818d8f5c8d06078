"""Cursor pagination, the convention of every list endpoint (exercised through /api/v1/tasks/)."""

import base64
import json
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tasks.models import Task
from tests.factories import ProjectFactory, TaskFactory

URL = "/api/v1/tasks/"


def make_cursor(*parts) -> str:
    raw = json.dumps(list(parts)).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def walk(client, url, link="next"):
    """Follow `link` from url to the end; return the ids of every page, in page order."""
    pages = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        pages.append([row["id"] for row in body["results"]])
        url = body[link]
    return pages


@pytest.fixture
def tied_tasks(db):
    """Seven tasks sharing one created_at: only the id breaks the tie."""
    project = ProjectFactory()
    tasks = TaskFactory.create_batch(7, project=project)
    Task.objects.filter(pk__in=[t.pk for t in tasks]).update(created_at=datetime(2026, 1, 1, tzinfo=UTC))
    return sorted((t.pk for t in tasks), reverse=True)


def test_response_has_results_and_absolute_next_and_previous_links(staff_client, tied_tasks):
    body = staff_client.get(URL, {"page_size": 3}).json()
    assert set(body) == {"results", "next", "previous"}
    assert body["previous"] is None
    assert body["next"].startswith("http://testserver/api/v1/tasks/?")
    second = staff_client.get(body["next"]).json()
    assert second["previous"].startswith("http://testserver/api/v1/tasks/?")


def test_walking_forward_over_tied_created_at_neither_skips_nor_repeats(staff_client, tied_tasks):
    pages = walk(staff_client, f"{URL}?page_size=2")
    assert pages == [tied_tasks[0:2], tied_tasks[2:4], tied_tasks[4:6], tied_tasks[6:7]]


def test_walking_back_from_the_last_page_returns_the_same_pages(staff_client, tied_tasks):
    url = f"{URL}?page_size=2"
    while (body := staff_client.get(url).json())["next"]:
        url = body["next"]
    back = walk(staff_client, body["previous"], link="previous")
    assert back == [tied_tasks[4:6], tied_tasks[2:4], tied_tasks[0:2]]


def test_default_ordering_is_newest_first_then_highest_id(staff_client, db):
    project = ProjectFactory()
    older, newer = TaskFactory(project=project), TaskFactory(project=project)
    Task.objects.filter(pk=older.pk).update(created_at=datetime(2025, 1, 1, tzinfo=UTC))
    ids = [row["id"] for row in staff_client.get(URL).json()["results"]]
    assert ids == [newer.pk, older.pk]


def test_rows_inserted_between_pages_do_not_shift_the_walk(staff_client, db):
    project = ProjectFactory()
    originals = sorted((t.pk for t in TaskFactory.create_batch(6, project=project)), reverse=True)
    first = staff_client.get(URL, {"page_size": 3}).json()
    TaskFactory.create_batch(4, project=project)  # newer rows arrive while the client reads
    rest = walk(staff_client, first["next"])
    seen = [row["id"] for row in first["results"]] + [pk for page in rest for pk in page]
    assert seen == originals


def test_page_size_defaults_to_50(staff_client, db):
    TaskFactory.create_batch(51, project=ProjectFactory())
    body = staff_client.get(URL).json()
    assert len(body["results"]) == 50
    assert body["next"] is not None


@pytest.mark.parametrize("page_size", ["1", "200"])
def test_page_size_bounds_are_accepted(staff_client, tied_tasks, page_size):
    response = staff_client.get(URL, {"page_size": page_size})
    assert response.status_code == 200
    assert len(response.json()["results"]) == min(int(page_size), len(tied_tasks))


@pytest.mark.parametrize("page_size", ["0", "201", "-1", "abc", "1.5", ""])
def test_page_size_outside_1_to_200_is_a_400_naming_page_size(staff_client, db, page_size):
    response = staff_client.get(URL, {"page_size": page_size})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_page_size"
    assert "page_size" in response.json()["error"]["fields"]


GOOD_TIME = "2026-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("garbage!", id="not-base64"),
        pytest.param("Zm9v", id="base64-not-json"),
        pytest.param(make_cursor("n", GOOD_TIME), id="truncated-one-part-missing"),
        pytest.param(make_cursor("n", GOOD_TIME, "1", "2"), id="extra-part"),
        pytest.param(base64.urlsafe_b64encode(b'{"n": 1}').decode(), id="json-object"),
        pytest.param(make_cursor("x", GOOD_TIME, "1"), id="unknown-direction"),
        pytest.param(make_cursor("n", "yesterday", "1"), id="bad-datetime"),
        pytest.param(make_cursor("n", "2026-01-01T00:00:00", "1"), id="naive-datetime"),
        pytest.param(make_cursor("n", "2026-13-45T00:00:00+00:00", "1"), id="impossible-date"),
        pytest.param(make_cursor("n", GOOD_TIME, "one"), id="id-not-integer"),
        pytest.param(make_cursor("n", GOOD_TIME, str(2**70)), id="id-overflows-bigint"),
        pytest.param(make_cursor("n", GOOD_TIME, 1), id="id-not-a-string"),
        pytest.param(make_cursor("n", None, "1"), id="null-value"),
        pytest.param(make_cursor("n", "", "1"), id="empty-value"),
        pytest.param("", id="empty-cursor-is-first-page"),
    ],
)
def test_every_kind_of_bad_cursor_is_a_400_saying_the_cursor_is_invalid(staff_client, tied_tasks, cursor):
    response = staff_client.get(URL, {"cursor": cursor})
    if cursor == "":
        assert response.status_code == 200  # an empty cursor means "from the start"
        return
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_cursor"
    assert error["message"].startswith("Invalid cursor")


def test_a_cut_or_tampered_real_cursor_is_a_400(staff_client, tied_tasks):
    next_url = staff_client.get(URL, {"page_size": 2}).json()["next"]
    cursor = next_url.split("cursor=")[1].split("&")[0]
    for bad in (cursor[:-3], cursor[:10], cursor[:-1] + ("A" if cursor[-1] != "A" else "B"), cursor + "%%%"):
        response = staff_client.get(URL, {"cursor": bad})
        assert response.status_code == 400, (bad, response.content)
        assert response.json()["error"]["code"] == "invalid_cursor"


def test_list_never_counts_and_seeks_with_a_row_comparison(staff_client, tied_tasks):
    next_url = staff_client.get(URL, {"page_size": 2}).json()["next"]
    with CaptureQueriesContext(connection) as queries:
        assert staff_client.get(next_url).status_code == 200
    sql = [q["sql"] for q in queries.captured_queries]
    assert not any("COUNT(" in statement.upper() for statement in sql)
    assert any('("tasks_task"."created_at", "tasks_task"."id") <' in statement for statement in sql)


def test_list_runs_the_same_queries_whatever_the_page_size(staff_client, django_assert_num_queries, db):
    TaskFactory.create_batch(30, project=ProjectFactory())
    # session + user + user perms + group perms + the page (tasks_task alone).
    with django_assert_num_queries(5):
        assert len(staff_client.get(URL, {"page_size": 2}).json()["results"]) == 2
    with django_assert_num_queries(5):
        assert len(staff_client.get(URL, {"page_size": 30}).json()["results"]) == 30


def test_ranked_search_pages_by_relevance_with_a_valid_cursor(staff_client, db):
    project = ProjectFactory()
    strong = TaskFactory(project=project, title="invoice invoice", description="invoice")
    weak = TaskFactory(project=project, title="other", description="an invoice")
    TaskFactory(project=project, title="unrelated", description="nothing here")
    first = staff_client.get(URL, {"search": "invoice", "page_size": 1}).json()
    assert [row["id"] for row in first["results"]] == [strong.pk]
    second = staff_client.get(first["next"]).json()
    assert [row["id"] for row in second["results"]] == [weak.pk]
    assert second["next"] is None
