"""Task webhooks are Celery jobs stored in the write's transaction (the outbox), one per receiver,
published after commit, never run in the request, and delivered once per event."""

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

import project.celery
from project.models import OutboxMessage
from tasks import jobs
from tasks.models import Task
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db

TASKS_URL = "/api/v1/tasks/"


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that keeps every POSTed JSON body."""

    url: str
    bodies: list[dict] = field(default_factory=list)
    idempotency_keys: list[str] = field(default_factory=list)


def _start_receiver() -> tuple[Receiver, ThreadingHTTPServer]:
    lock = threading.Lock()
    receiver = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            # Recorded before answering, so a delivery has been seen once its POST returned.
            with lock:
                receiver.bodies.append(body)
                receiver.idempotency_keys.append(self.headers.get("Idempotency-Key", ""))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format, *args):  # keep the test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/tasks"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver, server


@pytest.fixture
def receivers(settings) -> Iterator[list[Receiver]]:
    started = [_start_receiver() for _ in range(2)]
    settings.TASK_NOTIFY_WEBHOOK_URLS = [receiver.url for receiver, _ in started]
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


def test_task_created_through_the_api_is_delivered_once_to_every_receiver_after_commit(
    staff_client, receivers, eager_celery, django_capture_on_commit_callbacks
):
    project = ProjectFactory()

    with django_capture_on_commit_callbacks(execute=True):
        task_id = create_task(staff_client, project)

    for receiver in receivers:
        assert len(receiver.bodies) == 1
        (body,) = receiver.bodies
        assert body["event"] == "task.created"
        assert [task["id"] for task in body["tasks"]] == [task_id]
        assert body["tasks"][0]["title"] == "Pay the vendor invoice"


def test_nothing_is_delivered_before_the_transaction_commits(
    staff_client, receivers, eager_celery, django_capture_on_commit_callbacks
):
    project = ProjectFactory()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        task_id = create_task(staff_client, project)

    # The response went out and the delivery waits for commit (the task has no assignee, so the
    # stats-cache invalidation queues nothing: the one callback is the notification).
    assert [receiver.bodies for receiver in receivers] == [[], []]
    assert len(callbacks) == 1
    callbacks[0]()  # what commit would run
    assert [[task["id"] for body in receiver.bodies for task in body["tasks"]] for receiver in receivers] == [
        [task_id],
        [task_id],
    ]


@pytest.mark.parametrize(("urls", "jobs_queued"), [([], 0), (["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"], 2)])
def test_one_outbox_message_per_configured_receiver_is_stored_with_the_write(urls, jobs_queued, staff_client, settings):
    settings.TASK_NOTIFY_WEBHOOK_URLS = urls
    project = ProjectFactory()

    task_id = create_task(staff_client, project)

    messages = list(OutboxMessage.objects.order_by("id"))
    assert len(messages) == jobs_queued
    assert [message.kwargs["url"] for message in messages] == urls
    assert all(message.job == "tasks.notify_webhook" for message in messages)
    assert all(message.kwargs["task_ids"] == [task_id] for message in messages)
    # Each event has its own id, which is also the message's idempotency key.
    assert [message.kwargs["event_id"] for message in messages] == [str(m.idempotency_key) for m in messages]
    assert all(message.dispatched_at is None for message in messages)  # not before commit


def test_each_delivery_carries_its_event_id_as_idempotency_key(
    staff_client, receivers, eager_celery, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        create_task(staff_client, ProjectFactory())

    keys = {str(key) for key in OutboxMessage.objects.values_list("idempotency_key", flat=True)}
    for receiver in receivers:
        (body,) = receiver.bodies
        assert receiver.idempotency_keys == [body["id"]]
        assert body["id"] in keys
    assert OutboxMessage.objects.filter(dispatched_at__isnull=False, effect_done_at__isnull=False).count() == 2


def test_a_message_published_twice_delivers_its_event_once(
    staff_client, receivers, eager_celery, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        create_task(staff_client, ProjectFactory())
    # The relay (or a redelivery) publishes the same messages again.
    for message in OutboxMessage.objects.all():
        jobs.notify_task_webhook.apply(kwargs=message.kwargs, task_id=str(message.idempotency_key))

    assert [len(receiver.bodies) for receiver in receivers] == [1, 1]


def test_a_failed_delivery_releases_its_event_for_the_retry(staff_client, settings):
    settings.TASK_NOTIFY_WEBHOOK_URLS = ["http://127.0.0.1:9/closed-port"]
    create_task(staff_client, ProjectFactory())
    message = OutboxMessage.objects.get()

    jobs.notify_task_webhook.apply(kwargs=message.kwargs, task_id=str(message.idempotency_key))

    message.refresh_from_db()
    assert message.effect_done_at is None
    assert message.effect_leased_until is None  # a retry may claim it again


def test_http_client_is_one_pooled_client_with_the_configured_timeout(settings, monkeypatch):
    monkeypatch.setattr(jobs, "_http_client", None)  # build a fresh one; the old one comes back after

    client = jobs.http_client()
    try:
        assert jobs.http_client() is client
        assert isinstance(client, httpx.Client)
        timeout = client.timeout
        assert (timeout.read, timeout.write, timeout.pool) == (settings.TASK_NOTIFY_TIMEOUT_S,) * 3
        assert timeout.connect == 3.0
    finally:
        client.close()


def test_a_task_created_in_the_orm_without_the_service_queues_nothing(
    receivers, eager_celery, django_capture_on_commit_callbacks
):
    # Only the service queues side effects (no signals): a plain ORM write stays silent.
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        Task.objects.create(project=ProjectFactory(), title="Imported")

    assert callbacks == []
    assert [receiver.bodies for receiver in receivers] == [[], []]
