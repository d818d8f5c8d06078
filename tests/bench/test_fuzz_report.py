"""`make fuzz` reads schemathesis' NDJSON events and the stack's log: its table must count right."""

import base64
import json

from bench import fuzz

DATA_ERROR_TRACEBACK = f"""Traceback (most recent call last):
  File "{fuzz.BASE_DIR}/project/api/pagination.py", line 147, in paginate_queryset
    page = list(queryset)
  File "{fuzz.BASE_DIR}/.venv/lib/python3.11/site-packages/django/db/models/query.py", line 93, in __iter__
    results = compiler.execute_sql(
  File "{fuzz.BASE_DIR}/project/db/slow_queries.py", line 16, in slow_query_wrapper
    return execute(sql, params, many, context)
  File "{fuzz.BASE_DIR}/.venv/lib/python3.11/site-packages/psycopg/cursor.py", line 117, in execute
    raise ex.with_traceback(None)
django.db.utils.DataError: time zone displacement out of range: "0823-11-11 18:47:33+23:35"
LINE 1: ...ND "approvals_automationauditlog"."created_at" >= '0823-11-1...
                                                             ^"""


def scenario(phase: str, cases: list[tuple[str, str, int, list[tuple[str, str]], str]]) -> dict:
    """A ScenarioFinished event as schemathesis 4 writes it: (method, path, status, checks, request id)."""
    recorder = {"label": "Stateful tests", "cases": {}, "checks": {}, "interactions": {}}
    for number, (method, path, status, checks, request_id) in enumerate(cases):
        case_id = f"case{number}"
        recorder["cases"][case_id] = {"value": {"method": method, "path": path, "id": case_id}}
        recorder["checks"][case_id] = [
            {"name": name, "status": outcome}
            | ({"failure_info": {"failure": {"message": f"Received: {status}"}}} if outcome == "failure" else {})
            for name, outcome in checks
        ]
        recorder["interactions"][case_id] = {
            "request": {
                "method": method,
                "uri": f"http://127.0.0.1:8931{path.replace('{id}', '7')}?created_after=x",
                "headers": {"Content-Type": ["application/json"]},
                "body": {"$base64": base64.b64encode(b'{"reason": ""}').decode()},
            },
            "response": {"status_code": status, "headers": {"x-request-id": [request_id]}},
        }
    return {"ScenarioFinished": {"phase": phase, "status": "failure", "recorder": recorder}}


def test_traceback_summary_names_the_last_exception_and_the_app_frame_outside_the_db_wrappers():
    summary = fuzz.summarize_traceback(DATA_ERROR_TRACEBACK)

    assert summary.startswith("django.db.utils.DataError: time zone displacement out of range")
    assert summary.endswith("(at project/api/pagination.py:147 in paginate_queryset)")


def test_events_are_counted_per_documented_operation_with_the_servers_traceback(tmp_path):
    every_check_passes = [(name, "success") for name in fuzz.CHECKS]
    server_error = [("not_a_server_error", "failure"), ("status_code_conformance", "failure")]
    events = [
        {"Initialize": {"seed": 1}},
        scenario(
            "stateful",
            [
                ("GET", "/api/v1/tasks/", 200, every_check_passes, "r1"),
                ("GET", "/api/v1/tasks/", 500, server_error, "r2"),
                ("GET", "/api/v1/tasks/", 500, server_error, "r3"),
                ("POST", "/api/v1/tasks/{id}/", 404, [("status_code_conformance", "failure")], "r4"),
                ("TRACE", "/api/v1/tasks/", 405, every_check_passes, "r5"),
            ],
        ),
        {"NonFatalError": {"label": "GET /api/v1/tasks/", "phase": "coverage", "value": {"type": "SystemError"}}},
    ]
    ndjson = tmp_path / "events.ndjson"
    ndjson.write_text("".join(json.dumps(event) + "\n" for event in events))

    operations, failures, cases_per_phase, errors = fuzz.read_events(
        ndjson,
        {"r2": "django.db.utils.DataError: out of range (at project/api/pagination.py:147 in paginate_queryset)"},
        ["GET /api/v1/tasks/", "POST /api/v1/tasks/{id}/"],
    )

    assert cases_per_phase == {"stateful": 5}
    assert operations["GET /api/v1/tasks/"].cases == 3
    # A 500 is a server error once, not also an undocumented status.
    assert operations["GET /api/v1/tasks/"].failures == {"not_a_server_error": 2}
    assert operations["POST /api/v1/tasks/{id}/"].failures == {"status_code_conformance": 1}
    assert operations[fuzz.UNDOCUMENTED_METHODS].cases == 1
    server_failure = failures[("GET /api/v1/tasks/", "not_a_server_error", 500, "")]
    assert server_failure.count == 2
    assert server_failure.traceback.startswith("django.db.utils.DataError")
    assert server_failure.request == ('GET /api/v1/tasks/?created_after=x  [application/json] {"reason": ""}')
    # schemathesis' own crash is listed, not held against the API.
    assert [error.api_fault for error in errors] == [False]


def test_a_request_that_timed_out_counts_against_the_api():
    error = fuzz.RunError(label="GET /api/v1/tasks/", phase="fuzzing", kind="ReadTimeout", message="", fatal=False)

    assert error.api_fault


def test_a_dot_segment_id_that_the_client_sends_to_the_list_is_the_tools_artifact_not_a_violation(tmp_path):
    detail_checked_against_a_list_body = [
        ("not_a_server_error", "success"),
        ("response_schema_conformance", "failure"),
    ]
    misrouted = scenario(
        "fuzzing", [("GET", "/api/v1/approvals/atoms/{id}/", 200, detail_checked_against_a_list_body, "r1")]
    )
    # requests removes the dot segment of id ".": GET /atoms/./ goes out as GET /atoms/.
    misrouted["ScenarioFinished"]["recorder"]["interactions"]["case0"]["request"]["uri"] = (
        "http://127.0.0.1:8931/api/v1/approvals/atoms/"
    )
    ndjson = tmp_path / "events.ndjson"
    ndjson.write_text(json.dumps(misrouted) + "\n")

    operations, failures, _, errors = fuzz.read_events(ndjson, {}, ["GET /api/v1/approvals/atoms/{id}/"])

    assert failures == {}
    assert operations["GET /api/v1/approvals/atoms/{id}/"].failures == {}
    assert [(error.kind, error.api_fault) for error in errors] == [("MisroutedRequest", False)]


def test_a_request_that_reached_its_route_keeps_its_schema_violation(tmp_path):
    violation = [("not_a_server_error", "success"), ("response_schema_conformance", "failure")]
    ndjson = tmp_path / "events.ndjson"
    ndjson.write_text(
        json.dumps(scenario("fuzzing", [("GET", "/api/v1/approvals/atoms/{id}/", 200, violation, "r1")])) + "\n"
    )

    _, failures, _, errors = fuzz.read_events(ndjson, {}, ["GET /api/v1/approvals/atoms/{id}/"])

    assert [failure.check for failure in failures.values()] == ["response_schema_conformance"]
    assert errors == []
