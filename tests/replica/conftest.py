"""Fixtures for tests/replica: only `make test-replica` starts the streaming replica they need."""

import copy
import os
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections

from project.db.routers import REPLICA_ALIAS, reset_replica_breaker

REPLICA_PGDATA = os.environ.get("OPSDECK_REPLICA_PGDATA", "")
CATCH_UP_TIMEOUT_S = 60  # a bound against hanging, not a performance figure


def pytest_collection_modifyitems(items):
    skip = pytest.mark.skip(reason="needs a streaming replica: make test-replica")
    for item in items:
        if not REPLICA_PGDATA and "tests/replica" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture
def replica():
    """connections["replica"] on the streaming replica's copy of the test database.

    The test settings mirror the replica alias onto the primary (there is no test database to
    create on a read-only standby); here it goes to the real one: the primary's test database,
    as replayed by the replica."""
    alias = connections[REPLICA_ALIAS]
    mirrored = alias.settings_dict
    real = copy.deepcopy(settings.DATABASES[REPLICA_ALIAS])
    real["NAME"] = connections["default"].settings_dict["NAME"]
    alias.close()
    alias.close_pool()
    alias.settings_dict = real
    reset_replica_breaker()
    wait_until_replayed()
    try:
        yield Path(REPLICA_PGDATA)
    finally:
        alias.close()
        alias.close_pool()
        alias.settings_dict = mirrored
        reset_replica_breaker()


def replica_query(sql: str, params=None):
    with connections[REPLICA_ALIAS].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def wait_until_replayed() -> None:
    """Until the replica has replayed everything the primary has committed so far."""
    _wait_for_replica("pg_last_wal_replay_lsn")


def wait_until_received() -> None:
    """Until the replica has received (not necessarily replayed) all the primary's WAL so far."""
    _wait_for_replica("pg_last_wal_receive_lsn")


def _wait_for_replica(position: str) -> None:
    # The insert position: with synchronous_commit off a commit may not be written out yet.
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_insert_lsn()::text")
        (lsn,) = cursor.fetchone()
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    while not replica_query(f"SELECT {position}() >= %s::pg_lsn", [lsn])[0]:
        assert time.monotonic() < deadline, f"the replica's {position} did not reach {lsn}"
        time.sleep(0.02)
