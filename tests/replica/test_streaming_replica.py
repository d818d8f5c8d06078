"""Against a real streaming replica (`make test-replica`): monitoring and analytics reads come from
it, writes never go to it, its lag shows in the cockpit and /metrics, and a stopped replica's reads
fall back to the primary within the request that finds it gone."""

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from approvals.guard import busy_reason, database_signals
from monitoring.figures import collect_figures
from monitoring.metrics import families
from monitoring.models import MetricSample
from project.db.replica import replication_lag
from project.db.routers import REPLICA_ALIAS, read_replica, replica_alias, replica_fallbacks_total
from project.replica_rig import start_replica, stop_replica, wait_until_streaming
from tasks.models import Task
from tests.factories import TaskFactory, UserFactory
from tests.replica.conftest import replica_query, wait_until_received, wait_until_replayed

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "replica"])


def sample(name: str) -> MetricSample:
    return MetricSample.objects.create(taken_at=timezone.now(), name=name, value=1.0)


class ReplayPaused:
    """The replica stops replaying WAL in this block: what the primary commits meanwhile is not on
    it, so a read that misses it came from the replica."""

    def __enter__(self):
        replica_query("SELECT pg_wal_replay_pause()")

    def __exit__(self, *exc):
        replica_query("SELECT pg_wal_replay_resume()")
        wait_until_replayed()


def test_the_replica_is_a_streaming_standby_of_the_primary(replica):
    assert replica_query("SELECT pg_is_in_recovery()") == (True,)
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
        assert cursor.fetchone() == (1,)


def test_monitoring_and_analytics_reads_come_from_the_replica(replica):
    before = sample("replica.before")
    old_task = TaskFactory()
    wait_until_replayed()
    with ReplayPaused():
        after = sample("replica.after")
        new_task = TaskFactory()

        monitoring_read = set(MetricSample.objects.values_list("id", flat=True))
        with read_replica():
            analytics_read = set(Task.objects.values_list("id", flat=True))
        with connections[replica_alias()].cursor() as cursor:  # raw analytics SQL
            cursor.execute("SELECT count(*) FROM tasks_task WHERE id = %s", [new_task.pk])
            raw_read = cursor.fetchone()[0]

        assert monitoring_read == {before.pk}
        assert analytics_read == {old_task.pk}
        assert raw_read == 0
        # Everything else reads the primary, which has both.
        assert set(Task.objects.values_list("id", flat=True)) == {old_task.pk, new_task.pk}
        assert set(MetricSample.objects.using("default").values_list("id", flat=True)) == {before.pk, after.pk}


def test_writes_never_go_to_the_replica(replica):
    with CaptureQueriesContext(connections[REPLICA_ALIAS]) as on_replica, read_replica():
        written = sample("replica.written")
        task = TaskFactory()
        Task.objects.filter(pk=task.pk).update(title="renamed on the primary")
        MetricSample.objects.filter(pk=written.pk).delete()

    writes = [q["sql"] for q in on_replica.captured_queries if q["sql"].lstrip().split()[0].upper() != "SELECT"]
    assert writes == []
    assert Task.objects.using("default").get(pk=task.pk).title == "renamed on the primary"
    assert not MetricSample.objects.using("default").filter(pk=written.pk).exists()


def test_replication_lag_shows_in_the_cockpit_and_metrics(replica, client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    with ReplayPaused():
        for number in range(50):
            sample(f"replica.lagging.{number}")
        wait_until_received()

        lag = replication_lag()
        page = client.get(reverse("admin:monitoring_pool"))
        metrics = {family.name: family.samples[0].value for family in families(collect_figures())
                   if family.name.startswith("opsdeck_db_replica")}  # fmt: skip

    assert lag["available"] and lag["replay_paused"]
    assert lag["lag_bytes"] > 0 and lag["lag_s"] > 0
    assert page.status_code == 200
    assert "replay paused" in page.content.decode()
    assert metrics["opsdeck_db_replica_up"] == 1
    assert metrics["opsdeck_db_replica_lag_bytes"] > 0
    caught_up = replication_lag()  # background WAL (autovacuum, checkpoints) may be in flight
    assert caught_up["replay_paused"] is False and caught_up["lag_s"] < 60


def test_a_stopped_replica_falls_back_to_the_primary_within_one_request(replica, client, settings):
    settings.DB_REPLICA_RETRY_S = 3600  # the test decides when the replica is tried again
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    written = sample("replica.fallback")
    fallbacks = replica_fallbacks_total._value.get()
    connections[REPLICA_ALIAS].close()
    stop_replica(replica)
    try:
        page = client.get(reverse("admin:monitoring_pool"))
        read = set(MetricSample.objects.values_list("id", flat=True))
        lag = replication_lag()
    finally:
        start_replica(replica)
        wait_until_streaming(connections["default"].settings_dict["HOST"])

    assert page.status_code == 200
    assert "replica unreachable" in page.content.decode()
    assert read == {written.pk}  # from the primary
    assert (lag["configured"], lag["available"]) == (True, False)
    assert replica_fallbacks_total._value.get() == fallbacks + 1


def test_the_automation_guard_skips_a_run_while_the_replica_lags(replica, settings):
    settings.AUTOMATION_GUARD_MAX_REPLICA_LAG_S = 0.001
    with ReplayPaused():
        for number in range(50):
            sample(f"replica.guard.{number}")
        wait_until_received()
        lagging = busy_reason(database_signals())

    assert lagging is not None and lagging.startswith("replica lag ")
    settings.AUTOMATION_GUARD_MAX_REPLICA_LAG_S = 60
    assert "replica lag" not in (busy_reason(database_signals()) or "")  # caught up
