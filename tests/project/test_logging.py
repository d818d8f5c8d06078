"""JSON log lines with the request id, secrets redacted, request ids echoed, slow queries logged."""

import json
import logging
import re
import sys
from pathlib import Path

import pytest
from django.db import connection

from project.logging import JsonFormatter, RedactSecretsFilter, request_id_var, user_id_var


def make_record(msg: str, *args, name: str = "opsdeck.tests", level: int = logging.INFO, **extra):
    return logging.getLogger(name).makeRecord(name, level, __file__, 1, msg, args, None, extra=extra)


@pytest.fixture
def request_id():
    token = request_id_var.set("req-123abc")
    yield "req-123abc"
    request_id_var.reset(token)


def test_json_formatter_emits_one_object_with_request_id_and_extra_fields(request_id):
    record = make_record("task %s moved", 42, level=logging.WARNING, task_id=42, status="done")

    line = JsonFormatter().format(record)

    assert "\n" not in line
    payload = json.loads(line)
    assert payload["message"] == "task 42 moved"
    assert payload["level"] == "warning"
    assert payload["logger"] == "opsdeck.tests"
    assert payload["request_id"] == request_id
    assert payload["task_id"] == 42
    assert payload["status"] == "done"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", payload["ts"])


def test_json_formatter_leaves_out_request_and_user_ids_when_unset():
    payload = json.loads(JsonFormatter().format(make_record("no request here")))

    assert "request_id" not in payload
    assert "user_id" not in payload


def test_json_formatter_adds_user_id_when_set():
    token = user_id_var.set(7)
    try:
        payload = json.loads(JsonFormatter().format(make_record("who")))
    finally:
        user_id_var.reset(token)

    assert payload["user_id"] == 7


def test_json_formatter_serialises_values_json_cannot_and_includes_the_exception():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.getLogger("opsdeck.tests").makeRecord(
            "opsdeck.tests",
            logging.ERROR,
            __file__,
            1,
            "failed",
            (),
            exc_info=sys.exc_info(),
            extra={"path": Path("/srv/opsdeck")},
        )

    payload = json.loads(JsonFormatter().format(record))

    assert payload["path"] == "/srv/opsdeck"
    assert "RuntimeError: boom" in payload["exc"]


def test_redact_filter_removes_passwords_tokens_and_emails_from_the_message():
    record = make_record(
        "login password=hunter2 with Token 0123456789abcdef0123 for ada@example.com api_key: sk_live_abc"
    )

    assert RedactSecretsFilter().filter(record) is True
    message = record.getMessage()

    assert "hunter2" not in message
    assert "0123456789abcdef0123" not in message
    assert "ada@example.com" not in message
    assert "sk_live_abc" not in message
    assert message == "login password=[REDACTED] with Token [REDACTED] for [EMAIL] api_key: [REDACTED]"


def test_redact_filter_redacts_message_arguments_after_formatting():
    record = make_record("user %s set password=%s", "ada@example.com", "hunter2")

    RedactSecretsFilter().filter(record)

    assert record.getMessage() == "user [EMAIL] set password=[REDACTED]"


def test_redact_filter_redacts_secret_named_extra_fields_and_secrets_inside_other_fields():
    record = make_record(
        "request",
        authorization="Token 0123456789abcdef",
        Cookie="sessionid=abc",
        headers={"X-Api-Key": "k-123", "Accept": "application/json"},
        note="mail bob@example.org",
        status=200,
    )

    RedactSecretsFilter().filter(record)

    assert record.authorization == "[REDACTED]"
    assert record.Cookie == "[REDACTED]"
    assert record.headers == {"X-Api-Key": "[REDACTED]", "Accept": "application/json"}
    assert record.note == "mail [EMAIL]"
    assert record.status == 200


@pytest.mark.django_db
def test_every_response_carries_a_request_id(client):
    response = client.get("/health")

    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])


@pytest.mark.django_db
def test_each_request_gets_its_own_request_id(client):
    assert client.get("/health")["X-Request-ID"] != client.get("/health")["X-Request-ID"]


@pytest.mark.django_db
def test_a_sane_incoming_request_id_is_echoed(client):
    response = client.get("/health", HTTP_X_REQUEST_ID="lb-7f3a.9_c-01")

    assert response["X-Request-ID"] == "lb-7f3a.9_c-01"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "incoming",
    ["has spaces in it", "x" * 200, "semi;colon", "new\\nline", "é-unicode"],
    ids=["spaces", "200-chars", "semicolon", "backslash", "non-ascii"],
)
def test_an_insane_incoming_request_id_is_replaced(client, incoming):
    response = client.get("/health", HTTP_X_REQUEST_ID=incoming)

    assert response["X-Request-ID"] != incoming
    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])


@pytest.mark.django_db
def test_request_id_is_on_the_log_lines_of_that_request_and_reset_after(client):
    captured: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            captured.append(JsonFormatter().format(record))

    handler = Capture()
    access_logger = logging.getLogger("opsdeck.access")
    access_logger.addHandler(handler)
    try:
        client.get("/health", HTTP_X_REQUEST_ID="trace-42")
    finally:
        access_logger.removeHandler(handler)

    [line] = [json.loads(line) for line in captured]
    assert line["request_id"] == "trace-42"
    assert line["path"] == "/health"
    assert line["status"] == 200
    assert request_id_var.get() == ""


def handlers_reached(logger: logging.Logger) -> list[logging.Handler]:
    handlers = []
    while logger is not None:
        handlers += logger.handlers
        logger = logger.parent if logger.propagate else None
    return handlers


@pytest.fixture
def slow_query_records(caplog):
    # opsdeck.* does not propagate to the root logger, where caplog listens; listen on the logger
    # itself (unless this pytest already hooks non-propagating loggers: then records would double).
    slow_logger = logging.getLogger("opsdeck.slow_query")
    attach = caplog.handler not in handlers_reached(slow_logger)
    if attach:
        slow_logger.addHandler(caplog.handler)
    try:
        yield lambda: [record for record in caplog.records if record.name == "opsdeck.slow_query"]
    finally:
        if attach:
            slow_logger.removeHandler(caplog.handler)


@pytest.mark.django_db
def test_query_slower_than_the_threshold_is_logged_with_its_sql_and_duration(settings, slow_query_records):
    settings.SLOW_QUERY_MS = 0

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0.01)")

    [record] = [record for record in slow_query_records() if "pg_sleep" in record.sql]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "slow query"
    assert record.duration_ms >= 10
    assert record.database == "default"


@pytest.mark.django_db
def test_query_faster_than_the_threshold_is_not_logged(settings, slow_query_records):
    settings.SLOW_QUERY_MS = 60_000

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0.01)")

    assert slow_query_records() == []
