"""Shared fixtures. Tests run against real PostgreSQL and Redis (`make test` provides them)."""

import os

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.test.utils import override_settings
from rest_framework.test import APIClient

from tests.factories import UserFactory


@pytest.fixture(scope="session", autouse=True)
def cache_keys_of_this_run_only(django_test_environment):
    """A key prefix of this test run's own: clearing the cache between tests then never touches
    another run's keys (two developers' runs, or `make run`, sharing one Redis)."""
    caches = {
        alias: {**config, "KEY_PREFIX": f"opsdeck-test-{os.getpid()}"} for alias, config in settings.CACHES.items()
    }
    with override_settings(CACHES=caches):
        yield


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    # PBKDF2's 1M iterations cost ~0.5 s per user created; tests do not need them.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def webhook_receivers_on_loopback_allowed(settings):
    # Webhook tests deliver to a real receiver on 127.0.0.1; tests of the address check turn it off.
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True


@pytest.fixture(autouse=True)
def empty_cache():
    """Every test starts with an empty cache (stats, throttle histories, remembered API tokens).

    Only the cache's own keys: FLUSHDB would also drop the Celery broker's queues when both
    share one Redis database, as they do under `make run`.
    """
    from project.api.authentication import forget_all_tokens
    from project.cachebreaker import reset_breaker

    reset_breaker()  # a test that stalled Redis must not leave the next one without a cache
    cache.delete_pattern("*")
    forget_all_tokens()  # the API tokens each process remembers (project/api/authentication.py)
    yield
    reset_breaker()
    cache.delete_pattern("*")
    forget_all_tokens()


def grant(user, *codenames: str):
    """Give `user` the named permissions, e.g. grant(user, "tasks.view_task")."""
    for dotted in codenames:
        app_label, codename = dotted.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    # Django caches permissions on the instance; a fresh copy sees the new ones.
    return type(user).objects.get(pk=user.pk)


TASK_PERMISSIONS = [
    f"tasks.{action}_{model}" for model in ("task", "project") for action in ("view", "add", "change", "delete")
]


@pytest.fixture
def staff_user(db):
    return grant(UserFactory(), *TASK_PERMISSIONS)


@pytest.fixture
def client_for():
    """client_for(user): an API client logged in as user through the session."""

    def make(user) -> APIClient:
        client = APIClient()
        client.force_login(user)
        return client

    return make


@pytest.fixture
def staff_client(staff_user, client_for) -> APIClient:
    return client_for(staff_user)
