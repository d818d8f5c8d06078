import os

import pytest
from django.core.cache import cache
from django.test import Client

from tests.conftest import grant
from tests.factories import UserFactory


@pytest.fixture(autouse=True)
def own_redis_keys(settings):
    """This run's cache and pool-stats keys only: other runs (and `make run`) share this Redis."""
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"opsdeck-test-mon-{os.getpid()}"}}
    settings.POOL_STATS_KEY_PREFIX = f"opsdeck-test-mon-{os.getpid()}:poolstats"
    cache.delete_pattern("*")
    yield
    cache.delete_pattern("*")


@pytest.fixture
def viewer(db):
    """Staff with the cockpit's view permission, not a superuser."""
    return grant(UserFactory(is_staff=True), "monitoring.view_dashboard")


@pytest.fixture
def superuser(db):
    return UserFactory(is_staff=True, is_superuser=True)


@pytest.fixture
def login():
    def make(user) -> Client:
        client = Client()
        client.force_login(user)
        return client

    return make


def _server_says(query: str) -> bool:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(query)
        return bool(cursor.fetchone()[0])


@pytest.fixture
def with_pg_stat_statements():
    """Skip on a server without pg_stat_statements loaded (make test's embedded PostgreSQL and the
    compose file's preload it; a plain distribution server does not)."""
    if not _server_says(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')"
        " AND position('pg_stat_statements' in current_setting('shared_preload_libraries')) > 0"
    ):
        pytest.skip("this PostgreSQL has no pg_stat_statements loaded")
