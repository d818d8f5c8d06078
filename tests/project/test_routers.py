"""DATABASE_REPLICA_URL: analytics and monitoring reads go to the replica, everything else to the primary."""

import pytest

from project.db.routers import ReadReplicaRouter, read_replica, replica_alias
from tasks.models import Task

# The router reads settings.DATABASES at call time; these tests add a replica alias on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")


@pytest.fixture
def with_replica(settings):
    settings.DATABASES = {**settings.DATABASES, "replica": dict(settings.DATABASES["default"])}


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
