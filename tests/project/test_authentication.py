"""API token authentication: knox tokens, checked in one query per request, none for a recent token."""

import datetime as dt
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from project.jobs import delete_expired_api_tokens_job
from tests.conftest import grant
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

STATS = "/api/v1/tasks/stats/"


def token_client(user, expiry=dt.timedelta(days=1)) -> tuple[APIClient, AuthToken]:
    instance, token = AuthToken.objects.create(user=user, expiry=expiry)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client, instance


def test_a_token_request_reads_the_token_once_however_many_tokens_the_user_has(settings):
    settings.API_TOKEN_CACHE_TTL_S = 0  # knox's path: every request reads its token
    user = grant(UserFactory(), "tasks.view_task")
    for _ in range(3):
        AuthToken.objects.create(user=user, expiry=dt.timedelta(days=1))
    client, _ = token_client(user)
    client.get(STATS, {"assignee": user.pk})  # fills the stats cache

    with CaptureQueriesContext(connection) as queries:
        response = client.get(STATS, {"assignee": user.pk})

    assert response.status_code == 200
    token_queries = [q["sql"] for q in queries.captured_queries if "knox_authtoken" in q["sql"]]
    assert len(token_queries) == 1


def test_an_expired_token_is_refused_and_deleted():
    user = grant(UserFactory(), "tasks.view_task")
    client, instance = token_client(user, expiry=dt.timedelta(days=1))
    AuthToken.objects.filter(pk=instance.pk).update(expiry=timezone.now() - dt.timedelta(seconds=1))

    response = client.get(STATS, {"assignee": user.pk})

    assert response.status_code == 401
    assert not AuthToken.objects.filter(pk=instance.pk).exists()


def test_the_hourly_job_deletes_every_expired_token_and_keeps_the_rest():
    user = UserFactory()
    _, live = token_client(user)
    _, forever = token_client(user, expiry=None)
    _, expired = token_client(user)
    AuthToken.objects.filter(pk=expired.pk).update(expiry=timezone.now() - dt.timedelta(seconds=1))

    outcome = delete_expired_api_tokens_job.apply(kwargs={}, throw=True)

    assert outcome.result == {"deleted": 1}
    assert set(AuthToken.objects.values_list("pk", flat=True)) == {live.pk, forever.pk}


def token_queries(client, user) -> tuple[int, int]:
    """(status, queries on knox_authtoken) of one request."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(STATS, {"assignee": user.pk})
    return response.status_code, sum("knox_authtoken" in q["sql"] for q in queries.captured_queries)


def test_a_token_used_moments_ago_is_not_read_again():
    user = grant(UserFactory(), "tasks.view_task")
    client, _ = token_client(user)

    assert token_queries(client, user) == (200, 1)
    assert token_queries(client, user) == (200, 0)


def test_a_remembered_token_is_read_again_once_its_entry_ends(settings, monkeypatch):
    settings.API_TOKEN_CACHE_TTL_S = 10
    user = grant(UserFactory(), "tasks.view_task")
    client, _ = token_client(user)
    assert token_queries(client, user) == (200, 1)
    later = time.monotonic() + 11
    monkeypatch.setattr("project.api.authentication.time.monotonic", lambda: later)

    assert token_queries(client, user) == (200, 1)


def test_a_deleted_token_is_refused_at_once_though_remembered():
    user = grant(UserFactory(), "tasks.view_task")
    client, instance = token_client(user)
    assert token_queries(client, user) == (200, 1)

    instance.delete()  # as the admin does

    assert token_queries(client, user)[0] == 401


def test_a_deactivated_user_is_refused_at_once_though_their_token_is_remembered():
    user = grant(UserFactory(), "tasks.view_task")
    client, _ = token_client(user)
    assert token_queries(client, user) == (200, 1)

    user.is_active = False
    user.save()

    assert token_queries(client, user)[0] == 401


def test_a_withdrawn_permission_applies_at_once_though_the_token_is_remembered():
    user = grant(UserFactory(), "tasks.view_task")
    client, _ = token_client(user)
    assert token_queries(client, user) == (200, 1)

    user.user_permissions.clear()

    assert token_queries(client, user)[0] == 403


def test_a_remembered_token_that_expires_is_refused_and_deleted(monkeypatch):
    user = grant(UserFactory(), "tasks.view_task")
    client, instance = token_client(user, expiry=dt.timedelta(hours=1))
    assert token_queries(client, user) == (200, 1)
    two_hours_on = timezone.now() + dt.timedelta(hours=2)
    monkeypatch.setattr("project.api.authentication.timezone.now", lambda: two_hours_on)

    assert token_queries(client, user)[0] == 401
    assert not AuthToken.objects.filter(pk=instance.pk).exists()
    assert token_queries(client, user)[0] == 401


def test_the_process_remembers_at_most_api_token_cache_size_tokens(settings):
    from project.api import authentication

    settings.API_TOKEN_CACHE_SIZE = 2
    user = grant(UserFactory(), "tasks.view_task")
    clients = [token_client(user)[0] for _ in range(3)]
    for client in clients:
        assert token_queries(client, user) == (200, 1)

    assert len(authentication._recent_tokens) == 2
    assert token_queries(clients[-1], user) == (200, 0)  # the newest stays, the oldest went
    assert token_queries(clients[0], user) == (200, 1)
