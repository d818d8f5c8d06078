"""The tasks API as other systems use it: auth, CRUD, filters, batch reads, bulk updates, stats."""

import gzip
from datetime import UTC, datetime, timedelta

import brotli
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from project.db.attribution import strip_origin
from project.models import ActivityLog
from tasks.models import Task
from tests.conftest import grant
from tests.factories import ProjectFactory, TaskFactory, UserFactory

TASKS = "/api/v1/tasks/"


def ids(response) -> list[int]:
    return [row["id"] for row in response.json()["results"]]


# --- Auth and permissions -----------------------------------------------------------------------


def test_anonymous_requests_are_401_in_the_error_envelope(db):
    response = APIClient().get(TASKS)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_a_user_without_view_permission_gets_403(client_for, db):
    response = client_for(UserFactory()).get(TASKS)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


def test_view_permission_allows_reading_but_not_writing(client_for, db):
    client = client_for(grant(UserFactory(), "tasks.view_task"))
    assert client.get(TASKS).status_code == 200
    response = client.post(TASKS, {"project": ProjectFactory().pk, "title": "x"}, format="json")
    assert response.status_code == 403


def test_batch_read_needs_only_view_permission(client_for, db):
    task = TaskFactory()
    client = client_for(grant(UserFactory(), "tasks.view_task"))
    response = client.post(f"{TASKS}batch/", {"ids": [task.pk]}, format="json")
    assert response.status_code == 200
    assert ids(response) == [task.pk]


# --- CRUD -----------------------------------------------------------------------------------------


def test_create_returns_201_and_records_activity(staff_client, staff_user):
    project = ProjectFactory()
    response = staff_client.post(
        TASKS, {"project": project.pk, "title": "Pay vendor", "tags": ["finance"], "priority": "high"}, format="json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["title"] == "Pay vendor"
    assert body["status"] == "todo"
    log = ActivityLog.objects.get(action="task.create", entity_id=str(body["id"]))
    assert log.user_id == staff_user.pk
    assert log.category == "tasks"


def test_validation_errors_name_each_bad_field(staff_client, db):
    response = staff_client.post(TASKS, {"status": "finished", "tags": "not-a-list"}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "required"  # the first problem's code; each field lists its own
    assert error["message"] == "Some fields are invalid."
    assert error["fields"]["status"] == ['"finished" is not a valid choice.']
    assert {"project", "title", "status", "tags"} <= set(error["fields"])


def test_malformed_json_is_a_400_not_a_500(staff_client, db):
    response = staff_client.generic("POST", TASKS, "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_completing_a_task_sets_completed_at_and_reopening_clears_it(staff_client, db):
    task = TaskFactory()
    done = staff_client.patch(f"{TASKS}{task.pk}/", {"status": "done"}, format="json").json()
    assert done["completed_at"] is not None
    reopened = staff_client.patch(f"{TASKS}{task.pk}/", {"status": "todo"}, format="json").json()
    assert reopened["completed_at"] is None


def test_delete_removes_the_task(staff_client, db):
    task = TaskFactory()
    assert staff_client.delete(f"{TASKS}{task.pk}/").status_code == 204
    assert not Task.objects.filter(pk=task.pk).exists()
    assert staff_client.get(f"{TASKS}{task.pk}/").json()["error"]["code"] == "not_found"


def test_an_unexpected_error_is_an_enveloped_500_without_a_traceback(staff_client, monkeypatch, db):
    def explode():
        raise RuntimeError("boom: secret internals")

    monkeypatch.setattr("tasks.selectors.task_rows", explode)
    response = staff_client.get(TASKS)
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "server_error", "message": "Internal server error."}}


# --- Filters --------------------------------------------------------------------------------------


@pytest.fixture
def assortment(db):
    alice, bob = UserFactory(), UserFactory()
    project, other_project = ProjectFactory(), ProjectFactory()
    now = datetime.now(UTC)
    return {
        "alice": alice,
        "bob": bob,
        "project": project,
        "overdue": TaskFactory(project=project, assignee=alice, deadline=now - timedelta(days=1), tags=["finance"]),
        "overdue_but_done": TaskFactory(
            project=project, assignee=alice, deadline=now - timedelta(days=1), status=Task.Status.DONE
        ),
        "upcoming": TaskFactory(
            project=other_project,
            assignee=bob,
            deadline=now + timedelta(days=3),
            priority=Task.Priority.URGENT,
            tags=["ops", "finance"],
        ),
        "no_deadline": TaskFactory(project=other_project, status=Task.Status.BLOCKED, title="Renew vendor contract"),
    }


def test_filters_by_status_priority_assignee_project_and_tag(staff_client, assortment):
    a = assortment
    assert set(ids(staff_client.get(TASKS, {"status": "blocked"}))) == {a["no_deadline"].pk}
    assert set(ids(staff_client.get(TASKS, {"status": ["blocked", "done"]}))) == {
        a["no_deadline"].pk,
        a["overdue_but_done"].pk,
    }
    assert set(ids(staff_client.get(TASKS, {"priority": "urgent"}))) == {a["upcoming"].pk}
    assert set(ids(staff_client.get(TASKS, {"assignee": a["bob"].pk}))) == {a["upcoming"].pk}
    assert set(ids(staff_client.get(TASKS, {"project": a["project"].pk}))) == {
        a["overdue"].pk,
        a["overdue_but_done"].pk,
    }
    assert set(ids(staff_client.get(TASKS, {"tag": "finance"}))) == {a["overdue"].pk, a["upcoming"].pk}


def test_overdue_means_open_and_past_its_deadline(staff_client, assortment):
    assert ids(staff_client.get(TASKS, {"overdue": "true"})) == [assortment["overdue"].pk]
    assert assortment["overdue"].pk not in ids(staff_client.get(TASKS, {"overdue": "false"}))


def test_deadline_range_filter(staff_client, assortment):
    now = datetime.now(UTC)
    response = staff_client.get(
        TASKS, {"deadline_after": now.isoformat(), "deadline_before": (now + timedelta(days=7)).isoformat()}
    )
    assert ids(response) == [assortment["upcoming"].pk]


def test_task_list_reads_only_the_task_table(staff_client, assortment):
    # Project and assignee are rendered as ids: a join would only fetch unused columns
    # (auth_user's password hash among them).
    with CaptureQueriesContext(connection) as queries:
        response = staff_client.get(TASKS, {"page_size": 5})
    assert response.status_code == 200
    assert {"project", "assignee"} <= set(response.json()["results"][0])
    (page_sql,) = [q["sql"] for q in queries.captured_queries if 'FROM "tasks_task"' in q["sql"]]
    assert "JOIN" not in page_sql
    assert '"password"' not in page_sql


def test_full_text_search_matches_title_and_description_words(staff_client, assortment):
    assert ids(staff_client.get(TASKS, {"search": "renewing contracts"})) == [assortment["no_deadline"].pk]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "nope"}, "status"),
        ({"deadline_after": "tomorrow"}, "deadline_after"),
        ({"assignee": "x"}, "assignee"),
    ],
)
def test_a_bad_filter_value_is_a_400_naming_the_filter(staff_client, db, params, field):
    response = staff_client.get(TASKS, params)
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


# --- Batch read and bulk update -------------------------------------------------------------------


def test_batch_returns_tasks_in_the_order_asked_with_missing_ids_in_one_query(
    staff_client, django_assert_num_queries, db
):
    first, second = TaskFactory(), TaskFactory()
    with CaptureQueriesContext(connection) as queries:
        response = staff_client.post(f"{TASKS}batch/", {"ids": [second.pk, 999999, first.pk]}, format="json")
    assert response.status_code == 200
    assert ids(response) == [second.pk, first.pk]
    assert response.json()["missing"] == [999999]
    task_queries = [q for q in queries.captured_queries if 'FROM "tasks_task"' in q["sql"]]
    assert len(task_queries) == 1


@pytest.mark.parametrize("payload", [{"ids": []}, {"ids": list(range(1, 502))}, {"ids": ["a"]}, {}])
def test_batch_rejects_empty_oversized_or_non_integer_id_lists(staff_client, db, payload):
    response = staff_client.post(f"{TASKS}batch/", payload, format="json")
    assert response.status_code == 400
    assert "ids" in response.json()["error"]["fields"]


def test_bulk_update_changes_every_task_with_one_update_statement(staff_client, db):
    tasks = TaskFactory.create_batch(5)
    assignee = UserFactory()
    with CaptureQueriesContext(connection) as queries:
        response = staff_client.post(
            f"{TASKS}bulk-update/",
            {"ids": [t.pk for t in tasks], "status": "done", "assignee": assignee.pk},
            format="json",
        )
    assert response.status_code == 200, response.content
    assert response.json() == {"updated": 5}
    updates = [q for q in queries.captured_queries if strip_origin(q["sql"]).startswith('UPDATE "tasks_task"')]
    assert len(updates) == 1
    rows = Task.objects.filter(pk__in=[t.pk for t in tasks])
    assert all(t.status == "done" and t.assignee_id == assignee.pk and t.completed_at for t in rows)
    (logged,) = ActivityLog.objects.filter(action="task.bulk_update")
    assert sorted(logged.metadata["ids"]) == sorted(t.pk for t in tasks)
    assert logged.metadata["count"] == 5


def test_bulk_update_is_all_or_nothing_when_an_id_does_not_exist(staff_client, db):
    tasks = TaskFactory.create_batch(3)
    response = staff_client.post(
        f"{TASKS}bulk-update/", {"ids": [t.pk for t in tasks] + [999999], "status": "done"}, format="json"
    )
    assert response.status_code == 400
    assert "999999" in response.json()["error"]["fields"]["ids"][0]
    assert not Task.objects.filter(status="done").exists()


def test_bulk_update_needs_something_to_change(staff_client, db):
    response = staff_client.post(f"{TASKS}bulk-update/", {"ids": [TaskFactory().pk]}, format="json")
    assert response.status_code == 400


# --- Stats cache ------------------------------------------------------------------------------------


def test_stats_count_by_status_and_priority_with_overdue(staff_client, assortment):
    body = staff_client.get(f"{TASKS}stats/", {"assignee": assortment["alice"].pk}).json()
    assert body["total"] == 2
    assert body["overdue"] == 1
    assert body["by_status"]["todo"] == 1
    assert body["by_status"]["done"] == 1
    assert body["by_priority"]["medium"] == 2


def test_stats_are_served_from_the_cache_on_the_second_call(staff_client, assortment):
    params = {"assignee": assortment["alice"].pk}
    staff_client.get(f"{TASKS}stats/", params)
    with CaptureQueriesContext(connection) as queries:
        assert staff_client.get(f"{TASKS}stats/", params).status_code == 200
    assert not [q for q in queries.captured_queries if "tasks_task" in q["sql"]]


def test_changing_a_task_invalidates_its_old_and_new_assignees_stats(
    staff_client, assortment, django_capture_on_commit_callbacks
):
    alice, bob = assortment["alice"], assortment["bob"]
    before_alice = staff_client.get(f"{TASKS}stats/", {"assignee": alice.pk}).json()["total"]
    before_bob = staff_client.get(f"{TASKS}stats/", {"assignee": bob.pk}).json()["total"]
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.patch(f"{TASKS}{assortment['overdue'].pk}/", {"assignee": bob.pk}, format="json")
    assert response.status_code == 200
    assert staff_client.get(f"{TASKS}stats/", {"assignee": alice.pk}).json()["total"] == before_alice - 1
    assert staff_client.get(f"{TASKS}stats/", {"assignee": bob.pk}).json()["total"] == before_bob + 1


@pytest.mark.parametrize("assignee", ["", "abc", "-1", "0", str(2**64)])
def test_stats_need_a_valid_assignee_id(staff_client, db, assignee):
    response = staff_client.get(f"{TASKS}stats/", {"assignee": assignee})
    assert response.status_code == 400
    assert "assignee" in response.json()["error"]["fields"]


# --- HTTP conventions: ETag, compression, throttling ---------------------------------------------


def test_get_carries_a_strong_etag_and_if_none_match_returns_304_without_body(staff_client, assortment):
    response = staff_client.get(TASKS)
    etag = response["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    not_modified = staff_client.get(TASKS, HTTP_IF_NONE_MATCH=etag)
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified["ETag"] == etag


def test_the_etag_changes_when_the_data_changes(staff_client, assortment):
    etag = staff_client.get(TASKS)["ETag"]
    TaskFactory()
    response = staff_client.get(TASKS, HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 200
    assert response["ETag"] != etag


@pytest.mark.parametrize(("encoding", "decompress"), [("br", brotli.decompress), ("gzip", gzip.decompress)])
def test_large_responses_are_compressed_as_negotiated(staff_client, db, encoding, decompress):
    TaskFactory.create_batch(20)
    plain = staff_client.get(TASKS)
    compressed = staff_client.get(TASKS, HTTP_ACCEPT_ENCODING=encoding)
    assert compressed["Content-Encoding"] == encoding
    assert "Accept-Encoding" in compressed["Vary"]
    assert decompress(compressed.content) == plain.content
    # Still a strong tag, distinct per encoding, and accepted back for a 304.
    assert compressed["ETag"] == plain["ETag"][:-1] + f'-{encoding}"'
    assert (
        staff_client.get(TASKS, HTTP_ACCEPT_ENCODING=encoding, HTTP_IF_NONE_MATCH=compressed["ETag"]).status_code == 304
    )


def test_responses_under_1kb_or_without_accept_encoding_are_not_compressed(staff_client, db):
    small = staff_client.get(TASKS, HTTP_ACCEPT_ENCODING="gzip, br")
    assert len(small.content) < 1024
    assert not small.has_header("Content-Encoding")
    TaskFactory.create_batch(20)
    assert not staff_client.get(TASKS).has_header("Content-Encoding")


def test_over_the_rate_limit_is_a_429_with_retry_after(staff_client, monkeypatch, db):
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"user": "3/min", "anon": "20/min", "bulk": "30/min"})
    statuses = [staff_client.get(TASKS).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    throttled = staff_client.get(TASKS)
    assert int(throttled["Retry-After"]) > 0
    assert throttled.json()["error"]["code"] == "throttled"
    assert throttled.json()["error"]["retry_after_s"] > 0


def test_default_rates_are_100_per_minute_for_users_and_20_for_anonymous(settings):
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    assert rates["user"] == "100/min"
    assert rates["anon"] == "20/min"


# --- OpenAPI ------------------------------------------------------------------------------------------


def test_openapi_schema_validates_without_warnings(db):
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")


def test_swagger_ui_is_served_without_any_cdn(db):
    html = APIClient().get("/api/docs/").content.decode()
    assert "swagger-ui" in html
    assert "cdn.jsdelivr" not in html and "unpkg.com" not in html and "cdnjs" not in html
