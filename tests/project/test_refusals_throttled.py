"""Refused requests count against the throttles, and admin logins are throttled (issue 9, defect 7)."""

import pytest
from django.urls import reverse
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from reconciliation.models import TenantMembership
from tests.conftest import TASK_PERMISSIONS, grant
from tests.factories import UserFactory
from tests.reconciliation.factories import JobFactory, member

pytestmark = pytest.mark.django_db
TASKS = "/api/v1/tasks/"


@pytest.fixture
def three_per_minute(monkeypatch):
    rates = {"user": "3/min", "anon": "3/min", "bulk": "30/min", "pending_count": "120/min"}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)


def test_forbidden_requests_are_throttled(client_for, three_per_minute):
    client = client_for(UserFactory())  # no tasks.view_task
    statuses = [client.get(TASKS).status_code for _ in range(5)]
    assert statuses == [403, 403, 403, 429, 429]
    throttled = client.get(TASKS)
    assert throttled.json()["error"]["code"] == "throttled"
    assert int(throttled["Retry-After"]) > 0


def test_unauthenticated_requests_are_throttled(three_per_minute):
    client = APIClient()
    statuses = [client.get(TASKS).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]


def test_a_bad_token_is_throttled():
    client = APIClient(HTTP_AUTHORIZATION="Token not-a-token")
    statuses = {client.get(TASKS).status_code for _ in range(25)}  # anonymous rate: 20/min
    assert statuses == {401, 429}


def test_an_object_level_refusal_counts_once(three_per_minute):
    job = JobFactory()
    client = APIClient()
    client.force_login(member(job.tenant, TenantMembership.Role.VIEWER))
    statuses = [
        client.post(f"/api/v1/reconciliations/jobs/{job.pk}/run/", {}, format="json").status_code for _ in range(4)
    ]
    assert statuses == [403, 403, 403, 429]


def test_allowed_requests_still_count_once(client_for, three_per_minute):
    client = client_for(grant(UserFactory(), *TASK_PERMISSIONS))
    assert [client.get(TASKS).status_code for _ in range(4)] == [200, 200, 200, 429]


# --- Admin login ---------------------------------------------------------------------------------


def admin_login(client, username, password):
    return client.post(reverse("admin:login"), {"username": username, "password": password, "next": "/admin/"})


def test_admin_login_refuses_every_attempt_after_too_many_wrong_passwords(client, settings):
    settings.ADMIN_LOGIN_MAX_FAILURES = 3
    UserFactory(username="ops", is_staff=True, password="right")
    for _ in range(3):
        response = admin_login(client, "ops", "wrong")
        assert response.status_code == 200 and "correct username and password" in response.content.decode()
    refused = admin_login(client, "ops", "right")
    assert refused.status_code == 200
    assert "Too many failed logins" in refused.content.decode()
    assert "_auth_user_id" not in client.session


def test_admin_login_throttle_is_per_username_and_address(client, settings):
    settings.ADMIN_LOGIN_MAX_FAILURES = 2
    UserFactory(username="ops", is_staff=True, password="right")
    UserFactory(username="other", is_staff=True, password="right")
    for _ in range(2):
        admin_login(client, "ops", "wrong")
    assert admin_login(client, "other", "right").status_code == 302
    from_elsewhere = type(client)(REMOTE_ADDR="10.0.0.9")
    assert admin_login(from_elsewhere, "ops", "right").status_code == 302


def test_admin_login_below_the_limit_succeeds(client, settings):
    settings.ADMIN_LOGIN_MAX_FAILURES = 3
    UserFactory(username="ops", is_staff=True, password="right")
    for _ in range(2):
        admin_login(client, "ops", "wrong")
    assert admin_login(client, "ops", "right").status_code == 302
