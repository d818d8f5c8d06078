"""A connection the server terminates mid-request (a PostgreSQL restart or failover) answers 503
with Retry-After, enveloped for the API and plain for pages, never 500; the next request works."""

import pytest
from django.db import OperationalError, connection
from django.test import Client

from project.db.errors import database_unavailable

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("tests.project.fault_urls")]


@pytest.fixture(autouse=True)
def dead_connection_dropped_before_teardown(transactional_db):
    # The test client keeps Django from closing connections at the end of a request (which is
    # what drops a dead one in production); drop it here so the database can be flushed.
    yield
    if not connection.is_usable():
        connection.close()


def test_an_api_request_whose_connection_is_terminated_answers_503_with_retry_after():
    response = Client(raise_request_exception=False).get("/api/v1/faults/terminated/")

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    error = response.json()["error"]
    assert error["code"] == "database_unavailable"
    assert error["retry_after_s"] == 5


def test_a_page_whose_connection_is_terminated_answers_a_plain_503_and_the_next_request_works():
    client = Client(raise_request_exception=False)

    response = client.get("/admin-faults/terminated/")

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response["Content-Type"].startswith("text/plain")
    assert client.get("/admin/login/").status_code == 200  # a fresh connection from the pool


def test_other_errors_stay_500():
    response = Client(raise_request_exception=False).get("/admin-faults/broken/")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "server_error"


def test_a_statement_timeout_is_not_mistaken_for_a_lost_connection():
    import psycopg.errors

    try:
        raise OperationalError("canceling statement due to statement timeout") from psycopg.errors.QueryCanceled(
            "canceling statement due to statement timeout"
        )
    except OperationalError as exc:
        assert not database_unavailable(exc)
