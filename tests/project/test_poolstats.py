"""Pool stats: every process publishes its own pool to Redis with a TTL; readers see all live ones."""

import datetime
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from celery.signals import beat_init, worker_process_init
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from project import poolstats
from project.poolstats import live_pool_stats, process_name, publish_pool_stats, stop_pool_stats_publisher

BASE_DIR = Path(__file__).resolve().parents[2]
DEADLINE_S = 20

PUBLISHER_SCRIPT = """
import sys
import django

django.setup()
from django.db import connection
from project.poolstats import start_pool_stats_publisher

with connection.cursor() as cursor:
    cursor.execute("SELECT 1")
connection.close()  # back to the pool, which stays open
start_pool_stats_publisher(interval_s=0.2)
print("ready", flush=True)
sys.stdin.read()  # until the test closes our stdin; atexit then withdraws our entry
"""


@pytest.fixture
def prefix(settings):
    """Keys of this test only: other runs (and make run) publish under the same Redis."""
    settings.POOL_STATS_KEY_PREFIX = f"opsdeck-test:poolstats:{uuid.uuid4().hex}"
    yield settings.POOL_STATS_KEY_PREFIX
    stop_pool_stats_publisher()
    client = poolstats._redis()
    for key in client.scan_iter(match=f"{settings.POOL_STATS_KEY_PREFIX}:*"):
        client.delete(key)


def poll(condition, what: str):
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def start_publisher_process(prefix: str, role: str) -> subprocess.Popen:
    env = {**os.environ, "POOL_STATS_KEY_PREFIX": prefix, "OPSDECK_ROLE": role}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER_SCRIPT],
        cwd=BASE_DIR,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "ready"
    return process


@pytest.mark.slow
def test_two_processes_publish_and_both_appear_until_they_exit(prefix):
    worker = start_publisher_process(prefix, "worker")
    beat = start_publisher_process(prefix, "beat")
    try:
        stats = poll(
            lambda: (s := live_pool_stats()) and {e["pid"] for e in s} >= {worker.pid, beat.pid} and s,
            "both processes' pool stats",
        )
        by_pid = {entry["pid"]: entry for entry in stats}
        assert (by_pid[worker.pid]["role"], by_pid[beat.pid]["role"]) == ("worker", "beat")
        for process in (worker, beat):
            entry = by_pid[process.pid]
            assert entry["process"] == f"{entry['hostname']}:{process.pid}"
            assert entry["open"] is True and entry["size"] >= 1  # opened for the SELECT, kept open
            assert 0 <= entry["available"] <= entry["size"] <= entry["max_size"]
            assert entry["requests"] >= 1 and entry["timeouts"] == 0 and entry["waiting"] == 0
            assert entry["usage_ratio"] == pytest.approx((entry["size"] - entry["available"]) / entry["max_size"])
            published = datetime.datetime.fromisoformat(entry["published_at"])
            assert abs((datetime.datetime.now(datetime.UTC) - published).total_seconds()) < DEADLINE_S
        assert [entry["role"] for entry in stats] == sorted(entry["role"] for entry in stats)
    finally:
        for process in (worker, beat):
            process.stdin.close()
            process.wait(timeout=DEADLINE_S)
    # A clean exit withdraws the entry at once rather than after the TTL.
    poll(lambda: not any(entry["pid"] in (worker.pid, beat.pid) for entry in live_pool_stats()), "withdrawal")


@pytest.mark.django_db
def test_a_publication_expires_after_the_ttl_unless_refreshed(prefix, settings):
    settings.POOL_STATS_TTL_S = 30
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")

    published = publish_pool_stats()

    ttl = poolstats._redis().ttl(f"{prefix}:{process_name()}")
    assert 0 < ttl <= 30
    [entry] = live_pool_stats()
    assert entry == published
    assert (entry["process"], entry["role"], entry["pid"]) == (process_name(), "web", os.getpid())


def test_a_pool_not_opened_yet_reports_no_connections(monkeypatch):
    from types import SimpleNamespace

    from psycopg_pool import ConnectionPool

    unopened = ConnectionPool("dbname=never_used", min_size=2, max_size=4, open=False)
    monkeypatch.setattr(poolstats, "connections", {"default": SimpleNamespace(pool=unopened)})

    stats = poolstats.current_pool_stats()

    assert (stats["open"], stats["size"], stats["available"], stats["max_size"], stats["usage_ratio"]) == (
        False,
        0,
        0,
        4,
        0.0,
    )


@pytest.mark.django_db
def test_unreadable_entries_are_skipped(prefix):
    poolstats._redis().set(f"{prefix}:garbage:1", b"\xff not json", ex=30)
    publish_pool_stats()

    assert [entry["pid"] for entry in live_pool_stats()] == [os.getpid()]


@pytest.mark.django_db
@pytest.mark.parametrize("signal", [worker_process_init, beat_init], ids=["worker child", "beat"])
def test_celery_worker_children_and_beat_start_a_publisher(prefix, signal):
    signal.send(sender="test")

    poll(lambda: any(entry["pid"] == os.getpid() for entry in live_pool_stats()), "the publisher's first publication")
    assert poolstats.start_pool_stats_publisher() is False  # one publisher per process
    stop_pool_stats_publisher()
    assert live_pool_stats() == []


@pytest.mark.django_db
@pytest.mark.parametrize("multiprocess", [False, True], ids=["single process", "multiprocess"])
def test_metrics_expose_every_live_pool_labelled_by_process_and_role(
    prefix, client, multiprocess, monkeypatch, tmp_path
):
    if multiprocess:
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    else:
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    poolstats._redis().set(
        f"{prefix}:worker-host:4242",
        '{"process": "worker-host:4242", "role": "worker", "size": 2, "available": 0, "waiting": 3,'
        ' "max_size": 2, "usage_ratio": 1.0, "timeouts": 7}',
        ex=30,
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    publish_pool_stats()

    response = client.get("/metrics")

    assert response.status_code == 200
    families = {family.name: family for family in text_string_to_metric_families(response.content.decode())}
    samples = {
        (family, sample.labels["process"], sample.labels["role"]): sample.value
        for family in poolstats.PoolStatsCollector.GAUGES_BY_NAME
        for sample in families[family].samples
    }
    assert samples[("opsdeck_db_pool_size", "worker-host:4242", "worker")] == 2
    assert samples[("opsdeck_db_pool_waiting", "worker-host:4242", "worker")] == 3
    assert samples[("opsdeck_db_pool_usage_ratio", "worker-host:4242", "worker")] == 1.0
    assert samples[("opsdeck_db_pool_timeouts", "worker-host:4242", "worker")] == 7
    assert samples[("opsdeck_db_pool_max_size", process_name(), "web")] >= 1
    assert ("opsdeck_db_pool_available", process_name(), "web") in samples


@pytest.mark.django_db
def test_metrics_still_answer_when_redis_is_away(prefix, client, monkeypatch):
    def redis_down():
        raise ConnectionError("redis is down")

    with monkeypatch.context() as patch:
        patch.setattr(poolstats, "_redis", redis_down)
        response = client.get("/metrics")

    assert response.status_code == 200
    assert b"opsdeck_db_pool_size" not in response.content
