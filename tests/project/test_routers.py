"""DATABASE_REPLICA_URL: analytics and monitoring reads go to the replica, everything else to the primary."""

import pytest
from django.db import OperationalError

from project.db.routers import ReadReplicaRouter, read_replica, replica_alias
from tasks.models import Task

# The router reads settings.DATABASES at call time; these tests add a replica alias on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")


@pytest.fixture
def with_replica(settings, monkeypatch):
    settings.DATABASES = {**settings.DATABASES, "replica": dict(settings.DATABASES["default"])}
    # Reachability is the breaker's business (tested below and, for real, by make test-replica).
    monkeypatch.setattr("project.db.routers.replica_usable", lambda: True)


@pytest.fixture
def unreachable_replica(settings, monkeypatch):
    settings.DATABASES = {**settings.DATABASES, "replica": dict(settings.DATABASES["default"])}
    monkeypatch.setattr("project.db.routers.replica_usable", lambda: False)


class MonitoringModel:
    class _meta:
        app_label = "monitoring"


def test_without_a_replica_every_read_uses_the_default_database():
    router = ReadReplicaRouter()
    with read_replica():
        assert router.db_for_read(Task) is None
    assert replica_alias() == "default"


def test_reads_inside_read_replica_go_to_the_replica(with_replica):
    router = ReadReplicaRouter()
    assert router.db_for_read(Task) is None
    with read_replica():
        assert router.db_for_read(Task) == "replica"
    assert router.db_for_read(Task) is None
    assert replica_alias() == "replica"


def test_monitoring_reads_always_go_to_the_replica(with_replica):
    assert ReadReplicaRouter().db_for_read(MonitoringModel) == "replica"


def test_writes_and_migrations_always_go_to_the_primary(with_replica):
    router = ReadReplicaRouter()
    with read_replica():
        assert router.db_for_write(Task) == "default"
    assert router.allow_migrate("default", "tasks")
    assert not router.allow_migrate("replica", "tasks")


def test_an_unreachable_replica_sends_its_reads_to_the_primary(unreachable_replica):
    router = ReadReplicaRouter()
    with read_replica():
        assert router.db_for_read(Task) is None
    assert router.db_for_read(MonitoringModel) is None
    assert replica_alias() == "default"


class FailingReplica:
    connection = None

    def __init__(self):
        self.attempts = 0

    def ensure_connection(self):
        self.attempts += 1
        raise OperationalError("connection failed: No such file or directory")


def test_one_failed_connect_opens_the_breaker_for_db_replica_retry_s(settings, monkeypatch):
    from project.db import routers

    settings.DB_REPLICA_RETRY_S = 3600
    replica = FailingReplica()
    monkeypatch.setattr(routers, "connections", {routers.REPLICA_ALIAS: replica})
    routers.reset_replica_breaker()
    try:
        assert [routers.replica_usable() for _ in range(3)] == [False, False, False]
        assert replica.attempts == 1
        routers.reset_replica_breaker()
        assert routers.replica_usable() is False
        assert replica.attempts == 2
    finally:
        routers.reset_replica_breaker()
