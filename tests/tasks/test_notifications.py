"""Task webhooks go through the platform's sender (project/webhooks.py): a delivery row per
receiver stored with the write, published after commit, signed with TASK_NOTIFY_WEBHOOK_SECRET,
retried with backoff, dead after WEBHOOK_MAX_ATTEMPTS, redeliverable, never sent to an internal
address unless allowed. Receivers run on 127.0.0.1 (tests allow loopback targets by default)."""

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.checks import run_checks
from django.utils import timezone

import project.celery
from project.models import ActivityLog, OutboxMessage
from project.webhooks import WebhookSender
from tasks import jobs, services, webhooks
from tasks.models import Task, TaskWebhookDelivery
from tests.factories import ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db

TASKS_URL = "/api/v1/tasks/"
SECRET = "task-hooks-secret"
Status = TaskWebhookDelivery.Status


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 answering `status` and keeping every request."""

    url: str = ""
    status: int = 204
    requests: list[tuple[dict, bytes]] = field(default_factory=list)

    @property
    def bodies(self) -> list[dict]:
        return [json.loads(body) for _, body in self.requests]


def _start_receiver() -> tuple[Receiver, ThreadingHTTPServer]:
    lock = threading.Lock()
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            # Recorded before answering, so a delivery has been seen once its POST returned.
            with lock:
                receiver.requests.append((dict(self.headers), body))
            self.send_response(receiver.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format, *args):  # keep the test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/tasks"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return receiver, server


@pytest.fixture
def receivers(settings) -> Iterator[list[Receiver]]:
    started = [_start_receiver() for _ in range(2)]
    settings.TASK_NOTIFY_WEBHOOK_URLS = [receiver.url for receiver, _ in started]
    settings.TASK_NOTIFY_WEBHOOK_SECRET = SECRET
    yield [receiver for receiver, _ in started]
    for _, server in started:
        server.shutdown()
        server.server_close()


@pytest.fixture
def eager_celery(monkeypatch):
    # setitem, not setattr: Celery's Settings cannot undo an attribute it never held (the key
    # lives under its CELERY_ name), while a removed item falls back to the configured value.
    monkeypatch.setitem(project.celery.app.conf, "task_always_eager", True)


def create_task(staff_client, project) -> int:
    response = staff_client.post(TASKS_URL, {"project": project.pk, "title": "Pay the vendor invoice"}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def a_delivery(url: str, *, status=Status.PENDING, attempts=0, due_in_s=-1) -> TaskWebhookDelivery:
    return TaskWebhookDelivery.objects.create(
        url=url,
        event="task.updated",
        payload={"id": "evt-1", "event": "task.updated", "tasks": []},
        status=status,
        attempts=attempts,
        next_attempt_at=timezone.now() + timedelta(seconds=due_in_s),
    )


def test_task_created_through_the_api_is_delivered_once_to_every_receiver_after_commit(
    staff_client, receivers, eager_celery, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        task_id = create_task(staff_client, ProjectFactory())

    for receiver in receivers:
        (body,) = receiver.bodies
        assert body["event"] == "task.created"
        assert [task["id"] for task in body["tasks"]] == [task_id]
        assert body["tasks"][0]["title"] == "Pay the vendor invoice"
    assert set(TaskWebhookDelivery.objects.values_list("status", flat=True)) == {Status.DELIVERED}


def test_nothing_is_delivered_before_the_transaction_commits(
    staff_client, receivers, eager_celery, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        task_id = create_task(staff_client, ProjectFactory())

    # The response went out and the deliveries wait for commit (the task has no assignee, so the
    # stats-cache invalidation queues nothing: the one callback publishes the outbox).
    assert [receiver.bodies for receiver in receivers] == [[], []]
    assert len(callbacks) == 1
    callbacks[0]()  # what commit would run
    assert [[t["id"] for body in receiver.bodies for t in body["tasks"]] for receiver in receivers] == [
        [task_id],
        [task_id],
    ]


@pytest.mark.parametrize(("urls", "deliveries"), [([], 0), (["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"], 2)])
def test_one_delivery_and_one_outbox_message_per_configured_receiver_are_stored_with_the_write(
    urls, deliveries, staff_client, settings
):
    settings.TASK_NOTIFY_WEBHOOK_URLS = urls

    task_id = create_task(staff_client, ProjectFactory())

    rows = list(TaskWebhookDelivery.objects.order_by("id"))
    assert [row.url for row in rows] == urls
    assert all(row.payload["tasks"][0]["id"] == task_id and row.status == Status.PENDING for row in rows)
    assert len({row.payload["id"] for row in rows}) == deliveries  # each receiver its own event id
    messages = list(OutboxMessage.objects.order_by("id"))
    assert [(m.job, m.kwargs) for m in messages] == [(webhooks.DELIVER_JOB, {"delivery_id": row.pk}) for row in rows]
    assert all(message.dispatched_at is None for message in messages)  # not before commit


def test_a_delivery_is_signed_so_the_receiver_can_verify_it_and_carries_its_event_id(
    staff_client, receivers, eager_celery, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        create_task(staff_client, ProjectFactory())

    for receiver in receivers:
        ((headers, body),) = receiver.requests
        timestamp = headers["X-Opsdeck-Timestamp"]
        expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Opsdeck-Signature"], f"sha256={expected}")
        assert headers["Idempotency-Key"] == json.loads(body)["id"]
        assert (headers["X-Opsdeck-Event"], headers["X-Opsdeck-Attempt"]) == ("task.created", "1")


def test_a_delivery_run_twice_is_sent_once(receivers):
    delivery = a_delivery(receivers[0].url)

    first = jobs.deliver_task_webhook.apply(kwargs={"delivery_id": delivery.pk}).result
    second = jobs.deliver_task_webhook.apply(kwargs={"delivery_id": delivery.pk}).result

    assert first["status"] == Status.DELIVERED
    assert "skipped" in second
    assert len(receivers[0].requests) == 1


def test_a_failed_attempt_is_retried_later_and_the_last_allowed_one_makes_it_dead(receivers, settings):
    receivers[0].status = 500
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    delivery = a_delivery(receivers[0].url)

    webhooks.sender.deliver(delivery.pk)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (Status.FAILED, 1, 500)
    assert delivery.next_attempt_at > timezone.now()  # backoff: not due at once

    TaskWebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    webhooks.sender.deliver(delivery.pk)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == (Status.DEAD, 2, None)


def test_a_loopback_receiver_is_not_contacted_when_private_targets_are_refused(receivers, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    delivery = a_delivery(receivers[0].url)

    webhooks.sender.deliver(delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == Status.FAILED
    assert delivery.last_error.startswith("Refused before connecting:")
    assert "loopback" in delivery.last_error
    assert receivers[0].requests == []


def test_redeliver_makes_a_dead_delivery_due_sends_it_and_audits_once(
    receivers, eager_celery, django_capture_on_commit_callbacks
):
    dead = a_delivery(receivers[0].url, status=Status.DEAD, attempts=8)
    staff = UserFactory()

    with django_capture_on_commit_callbacks(execute=True):
        count = services.task_webhook_redeliver(delivery_ids=[dead.pk, 999_999], actor=staff)

    assert count == 1
    dead.refresh_from_db()
    assert (dead.status, dead.attempts) == (Status.DELIVERED, 9)
    (log,) = ActivityLog.objects.filter(action="webhook_redeliver", category="tasks")
    assert log.metadata["ids"] == [dead.pk]


def test_send_due_queues_only_deliveries_that_are_due_oldest_first(monkeypatch):
    queued = []
    monkeypatch.setattr(WebhookSender, "enqueue", lambda self, ids, **kwargs: queued.append((ids, kwargs)))
    later = a_delivery("http://127.0.0.1:9/a", due_in_s=-10)
    oldest = a_delivery("http://127.0.0.1:9/a", status=Status.FAILED, attempts=2, due_in_s=-300)
    a_delivery("http://127.0.0.1:9/a", status=Status.FAILED, attempts=2, due_in_s=600)  # not yet
    a_delivery("http://127.0.0.1:9/a", status=Status.DELIVERED)
    a_delivery("http://127.0.0.1:9/a", status=Status.DEAD)

    assert jobs.send_due_task_webhooks.run_now({}) == {"queued": 2, "batch_full": False}
    assert queued == [([oldest.pk, later.pk], {"expires_s": 55})]


def test_the_task_webhook_jobs_run_on_the_webhooks_queue_and_send_due_every_minute():
    from project.schedules import SCHEDULES

    for name in (webhooks.DELIVER_JOB, webhooks.SEND_DUE_JOB):
        assert project.celery.app.amqp.router.route({}, name)["queue"].name == "webhooks"
    (schedule,) = [s for s in SCHEDULES if s.job == webhooks.SEND_DUE_JOB]
    assert (schedule.queue, schedule.crontab) == ("webhooks", {"minute": "*"})


def test_the_deploy_check_warns_when_receivers_are_configured_without_a_secret(settings):
    settings.TASK_NOTIFY_WEBHOOK_URLS = ["https://hooks.example.com/tasks"]
    settings.TASK_NOTIFY_WEBHOOK_SECRET = ""
    assert "tasks.W001" in [m.id for m in run_checks(include_deployment_checks=True)]
    settings.TASK_NOTIFY_WEBHOOK_SECRET = SECRET
    assert "tasks.W001" not in [m.id for m in run_checks(include_deployment_checks=True)]


def test_a_task_created_in_the_orm_without_the_service_queues_nothing(
    receivers, eager_celery, django_capture_on_commit_callbacks
):
    # Only the service queues side effects (no signals): a plain ORM write stays silent.
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        Task.objects.create(project=ProjectFactory(), title="Imported")

    assert callbacks == []
    assert not TaskWebhookDelivery.objects.exists()
