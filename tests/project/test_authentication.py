"""API token authentication: knox tokens, checked in one query per request."""

import datetime as dt

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


def test_a_token_request_reads_the_token_once_however_many_tokens_the_user_has():
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
