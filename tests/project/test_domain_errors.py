"""Domain errors declare their HTTP answer; the one API handler (project/api/errors.py) maps them to
the standard envelope — the same bodies the per-view decorators used to build."""

from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView  # first: DRF settings import the renderers, which import the handler

from approvals.exceptions import EntityNotFound, NotDecidable, RateLimited, VersionsNotFound
from approvals.rules import RuleInvalid
from project.api.errors import exception_handler
from project.errors import DomainError
from tasks.exceptions import TasksNotFound


def handled(error: Exception):
    request = APIRequestFactory().post("/api/v1/anything/")
    return exception_handler(error, {"request": request, "view": APIView()})


def test_a_field_error_reads_like_a_serializers_validation_error():
    response = handled(VersionsNotFound([7, 9]))
    assert response.status_code == 400
    message = "These versions do not exist: [7, 9] Nothing was changed."
    assert response.data == {"error": {"code": "not_found", "message": f"ids: {message}", "fields": {"ids": [message]}}}


def test_tasks_and_rules_name_their_field():
    tasks = handled(TasksNotFound([3])).data["error"]
    assert (tasks["code"], list(tasks["fields"])) == ("not_found", ["ids"])
    assert tasks["fields"]["ids"] == ["These tasks do not exist; nothing was changed: [3]"]
    rule = handled(RuleInvalid("conditions.all[0].op", "unknown operator")).data["error"]
    assert rule == {
        "code": "invalid_rule",
        "message": "conditions: conditions.all[0].op: unknown operator",
        "fields": {"conditions": ["conditions.all[0].op: unknown operator"]},
    }
    assert handled(EntityNotFound("No topic 5.")).data["error"]["fields"] == {"entity_id": ["No topic 5."]}


def test_a_conflict_is_a_409_with_the_errors_message():
    response = handled(NotDecidable("Version 4 is already approved."))
    assert response.status_code == 409
    assert response.data == {"error": {"code": "conflict", "message": "Version 4 is already approved."}}


def test_a_rate_limit_is_a_429_with_retry_after_and_the_remaining_count():
    response = handled(RateLimited(action="approval", limit=5, remaining=0, reset_in_s=12))
    assert response.status_code == 429
    assert response["Retry-After"] == "12"
    error = response.data["error"]
    assert error["code"] == "rate_limited"
    assert error["message"].endswith("window resets in 12s. Expected available in 12 seconds.")
    assert (error["retry_after_s"], error["remaining"]) == (12, 0)


def test_any_subclass_declares_its_own_status_and_code():
    class Gone(DomainError):
        http_status = 410
        http_code = "gone"

    response = handled(Gone("The export expired."))
    assert response.status_code == 410
    assert response.data == {"error": {"code": "gone", "message": "The export expired."}}
