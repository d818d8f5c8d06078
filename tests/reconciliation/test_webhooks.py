"""Webhooks: queued with the transaction that finishes an execution, signed, retried with backoff,
dead after N attempts, never sent to internal addresses unless allowed. Deliveries go to a real
HTTP receiver on 127.0.0.1 (test settings allow loopback targets; tests of the check turn it off).
"""

import hashlib
import hmac
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import trustme
from django.contrib.auth import get_user_model
from django.utils import timezone
from prometheus_client import REGISTRY

import project.celery
from project.models import ActivityLog, JobRun, OutboxMessage
from reconciliation.errors import WebhookTargetRefused
from reconciliation.models import Execution, ReconciliationJob, Tenant, WebhookDelivery, WebhookEndpoint
from reconciliation.webhooks import delivery as webhooks
from reconciliation.webhooks import jobs as webhook_jobs
from tests.plans import index_scans, scan_on

pytestmark = pytest.mark.django_db

COMPLETED = WebhookEndpoint.Event.EXECUTION_COMPLETED
FAILED = WebhookEndpoint.Event.EXECUTION_FAILED
SECRET = "s3cr3t-for-tests"


# --- A receiver on loopback ------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict
    body: bytes


@dataclass
class Receiver:
    """Answers every POST with `status` (after waiting for `release` when `hold` is set) and keeps it."""

    url: str = ""
    status: int = 204
    answer: bytes = b""
    hold: bool = False
    release: threading.Event = field(default_factory=threading.Event)
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def running_receiver(tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with state.lock:
                state.requests.append(Received(headers=dict(self.headers), body=body))
            if state.hold:
                # A receiver that does not answer in time: it waits until the test lets it go.
                state.release.wait(timeout=30)
            try:
                self.send_response(state.status)
                self.send_header("Content-Length", str(len(state.answer)))
                self.end_headers()
                self.wfile.write(state.answer)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the timeout test)

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls else "http"
    state.url = f"{scheme}://127.0.0.1:{server.server_address[1]}/hooks/opsdeck"
    # A short poll interval: shutdown() waits for the serving loop to notice (0.5 s by default).
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as state:
        yield state


# --- Data --------------------------------------------------------------------------------------------


def make_tenant(slug: str) -> Tenant:
    return Tenant.objects.create(name=slug.title(), slug=slug)


def make_execution(tenant: Tenant, *, status=Execution.Status.SUCCEEDED) -> Execution:
    job = ReconciliationJob.objects.create(tenant=tenant, name=f"Bank vs ledger ({tenant.slug})")
    return Execution.objects.create(
        tenant=tenant,
        job=job,
        status=status,
        started_at=timezone.now() - timedelta(seconds=5),
        finished_at=timezone.now(),
        summary={"match_rate": 0.98, "matched": 49, "open": 1},
    )


def make_endpoint(tenant: Tenant, url: str, *, events=(COMPLETED, FAILED), is_active=True) -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(
        tenant=tenant, url=url, secret=SECRET, events=list(events), is_active=is_active
    )


def make_delivery(endpoint: WebhookEndpoint, *, status=WebhookDelivery.Status.PENDING, attempts=0, due_in_s=-1):
    return WebhookDelivery.objects.create(
        endpoint=endpoint,
        tenant_id=endpoint.tenant_id,
        event=COMPLETED,
        payload={"id": 0, "event": COMPLETED, "data": {"execution_id": 1}},
        status=status,
        attempts=attempts,
        next_attempt_at=timezone.now() + timedelta(seconds=due_in_s),
    )


def attempts_counted(event: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value("opsdeck_webhook_delivery_attempts_total", {"event": event, "outcome": outcome})
    return value or 0.0


@pytest.fixture
def tenant() -> Tenant:
    return make_tenant("acme")


@pytest.fixture
def eager_celery(monkeypatch):
    # setitem, not setattr: Celery's Settings cannot undo an attribute it never held.
    monkeypatch.setitem(project.celery.app.conf, "task_always_eager", True)


@pytest.fixture
def private_targets_refused(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False


# --- Target URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, problem",
    [
        ("ftp://203.0.113.7/hook", "must use http or https, not 'ftp'"),
        ("file:///etc/passwd", "must use http or https, not 'file'"),
        ("//no-scheme.example/hook", "must use http or https, not 'no scheme'"),
        ("https:///path-only", "has no host"),
        ("http://1.1.1.1:99999/hook", "cannot be parsed"),
        ("http://no-such-host.invalid/hook", "cannot be resolved"),
    ],
)
def test_a_url_that_is_not_an_http_target_is_refused_naming_the_problem(url, problem):
    with pytest.raises(WebhookTargetRefused, match=problem):
        webhooks.webhook_endpoint_validate_url(url)


@pytest.mark.parametrize(
    "url, kind",
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("https://192.168.0.10/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://224.0.0.1/hook", "multicast"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://100.64.0.1/hook", "not globally routable"),
    ],
)
def test_internal_addresses_are_refused_unless_the_setting_allows_them(settings, url, kind):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    with pytest.raises(WebhookTargetRefused, match=f"a {kind} address"):
        webhooks.webhook_endpoint_validate_url(url)

    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    webhooks.webhook_endpoint_validate_url(url)


def test_a_public_address_is_accepted_with_the_setting_off(private_targets_refused):
    webhooks.webhook_endpoint_validate_url("https://1.1.1.1/hooks/opsdeck")


def test_a_name_is_refused_when_any_of_its_addresses_is_internal(private_targets_refused, monkeypatch):
    answers = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 443)) for ip in ("1.1.1.1", "10.0.0.5")]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: answers)

    with pytest.raises(WebhookTargetRefused, match=r"'hooks.example.com' resolves to 10.0.0.5, a private address"):
        webhooks.webhook_endpoint_validate_url("https://hooks.example.com/x")


def test_endpoint_create_checks_the_url_generates_a_secret_and_is_audited(tenant, private_targets_refused):
    user = get_user_model().objects.create_user(username="ops")

    with pytest.raises(WebhookTargetRefused):
        webhooks.webhook_endpoint_create(tenant=tenant, url="http://10.0.0.1/", events=[COMPLETED], user=user)
    endpoint = webhooks.webhook_endpoint_create(
        tenant=tenant, url="https://1.1.1.1/hook", events=[FAILED, COMPLETED, FAILED], user=user
    )

    for events in ([], ["execution.started"]):
        with pytest.raises(webhooks.WebhookEventsInvalid, match="non-empty list of"):
            webhooks.webhook_endpoint_create(tenant=tenant, url="https://1.1.1.1/hook", events=events, user=user)

    assert WebhookEndpoint.objects.count() == 1
    assert endpoint.events == [COMPLETED, FAILED]
    assert len(endpoint.secret) == 64
    log = ActivityLog.objects.get(action="webhook_endpoint_create")
    assert (log.entity_id, log.user_id) == (str(endpoint.pk), user.pk)
    assert endpoint.secret not in json.dumps(log.metadata)


def test_endpoint_update_checks_a_new_url_and_rotates_the_secret_without_logging_it(tenant, private_targets_refused):
    user = get_user_model().objects.create_user(username="ops")
    endpoint = make_endpoint(tenant, "https://1.1.1.1/hook")

    with pytest.raises(WebhookTargetRefused, match="a private address"):
        webhooks.webhook_endpoint_update(endpoint=endpoint, user=user, url="http://192.168.1.1/")
    updated = webhooks.webhook_endpoint_update(
        endpoint=endpoint, user=user, events=[FAILED], is_active=False, rotate_secret=True
    )

    updated.refresh_from_db()
    assert (updated.url, updated.events, updated.is_active) == ("https://1.1.1.1/hook", [FAILED], False)
    assert updated.secret != SECRET and len(updated.secret) == 64
    log = ActivityLog.objects.get(action="webhook_endpoint_update")
    assert log.metadata == {"events": [FAILED], "is_active": False, "secret_rotated": True}


# --- Queueing with the execution -------------------------------------------------------------------


def test_event_queue_creates_one_delivery_per_active_subscribed_endpoint_of_the_tenant_in_one_statement(
    tenant, django_assert_num_queries
):
    execution = make_execution(tenant)
    both = make_endpoint(tenant, "http://127.0.0.1:9/both")
    completed_only = make_endpoint(tenant, "http://127.0.0.1:9/completed", events=[COMPLETED])
    failed_only = make_endpoint(tenant, "http://127.0.0.1:9/failed", events=[FAILED])
    make_endpoint(tenant, "http://127.0.0.1:9/inactive", is_active=False)
    make_endpoint(make_tenant("other"), "http://127.0.0.1:9/other-tenant")

    with django_assert_num_queries(2):  # the deliveries, and their jobs in the outbox
        created = webhooks.webhook_event_queue(execution_id=execution.pk, event=COMPLETED)

    deliveries = list(WebhookDelivery.objects.order_by("endpoint_id"))
    assert created == 2
    assert [d.endpoint_id for d in deliveries] == [both.pk, completed_only.pk]
    assert failed_only.pk not in {d.endpoint_id for d in deliveries}
    for delivery in deliveries:
        assert (delivery.tenant_id, delivery.event, delivery.status, delivery.attempts) == (
            tenant.pk,
            COMPLETED,
            WebhookDelivery.Status.PENDING,
            0,
        )
        assert delivery.next_attempt_at is not None  # due at once: send_due recovers a lost job
        assert delivery.payload["id"] == delivery.pk
        assert delivery.payload["event"] == COMPLETED
        assert delivery.payload["data"] == {
            "execution_id": execution.pk,
            "job_id": execution.job_id,
            "job_name": execution.job.name,
            "tenant_id": tenant.pk,
            "status": "succeeded",
            "dry_run": False,
            "summary": {"match_rate": 0.98, "matched": 49, "open": 1},
            "started_at": delivery.payload["data"]["started_at"],
            "finished_at": delivery.payload["data"]["finished_at"],
        }
        assert datetime.fromisoformat(delivery.payload["data"]["finished_at"]) == execution.finished_at


def test_event_queue_sends_the_deliveries_after_commit_only(
    tenant, receiver, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setitem(project.celery.app.conf, "task_always_eager", True)
    execution = make_execution(tenant, status=Execution.Status.FAILED)
    make_endpoint(tenant, receiver.url, events=[FAILED])

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        webhooks.webhook_event_queue(execution_id=execution.pk, event=FAILED)
    # The job waits in the outbox, committed with the delivery; nothing leaves before commit.
    (delivery_id,) = WebhookDelivery.objects.values_list("pk", flat=True)
    assert list(OutboxMessage.objects.values_list("job", "kwargs", "dispatched_at")) == [
        (webhooks.DELIVER_JOB, {"delivery_id": delivery_id}, None)
    ]
    assert receiver.requests == []
    for callback in callbacks:
        callback()

    assert len(receiver.requests) == 1
    assert OutboxMessage.objects.get().dispatched_at is not None


def test_event_queue_for_a_tenant_without_endpoints_creates_nothing_and_queues_nothing(
    tenant, django_capture_on_commit_callbacks
):
    execution = make_execution(tenant)
    with django_capture_on_commit_callbacks() as callbacks:
        assert webhooks.webhook_event_queue(execution_id=execution.pk, event=COMPLETED) == 0
    assert callbacks == []
    assert not WebhookDelivery.objects.exists()


def test_event_queue_refuses_an_unknown_event(tenant):
    with pytest.raises(ValueError, match="unknown webhook event"):
        webhooks.webhook_event_queue(execution_id=make_execution(tenant).pk, event="execution.started")


# --- Delivering --------------------------------------------------------------------------------------


def test_delivery_end_to_end_posts_signed_json_that_the_receiver_can_verify(
    tenant, receiver, eager_celery, django_capture_on_commit_callbacks
):
    execution = make_execution(tenant)
    make_endpoint(tenant, receiver.url)
    before = int(timezone.now().timestamp())
    delivered_before = attempts_counted(COMPLETED, "delivered")

    # After commit, the deliver job runs (eagerly, through Celery) and POSTs to the receiver.
    with django_capture_on_commit_callbacks(execute=True):
        webhooks.webhook_event_queue(execution_id=execution.pk, event=COMPLETED)

    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code, delivery.last_error) == (
        WebhookDelivery.Status.DELIVERED,
        1,
        204,
        "",
    )
    assert delivery.delivered_at is not None and delivery.next_attempt_at is None
    assert attempts_counted(COMPLETED, "delivered") == delivered_before + 1

    (request,) = receiver.requests
    headers = request.headers
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Opsdeck-Event"] == COMPLETED
    assert headers["X-Opsdeck-Delivery"] == str(delivery.pk)
    assert headers["X-Opsdeck-Attempt"] == "1"
    timestamp = int(headers["X-Opsdeck-Timestamp"])
    assert before <= timestamp <= int(timezone.now().timestamp())
    # What a receiver does (docs/webhooks.md): recompute the HMAC over "{timestamp}.{raw body}".
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Opsdeck-Signature"], f"sha256={expected}")
    assert json.loads(request.body) == delivery.payload
    assert json.loads(request.body)["data"]["execution_id"] == execution.pk


def test_a_wrong_secret_does_not_verify(tenant, receiver):
    delivery = make_delivery(make_endpoint(tenant, receiver.url))
    webhooks.webhook_deliver(delivery_id=delivery.pk)

    (request,) = receiver.requests
    forged = hmac.new(b"another secret", f"{request.headers['X-Opsdeck-Timestamp']}.".encode() + request.body, "sha256")
    assert request.headers["X-Opsdeck-Signature"] != f"sha256={forged.hexdigest()}"


def test_a_500_fails_the_attempt_and_schedules_a_retry_within_the_backoff_window(tenant, receiver, settings):
    settings.WEBHOOK_BACKOFF_BASE_S = 30
    receiver.status, receiver.answer = 500, b'{"error": "database unavailable"}'
    delivery = make_delivery(make_endpoint(tenant, receiver.url), attempts=2, status=WebhookDelivery.Status.FAILED)
    failed_before = attempts_counted(COMPLETED, "failed")

    started = timezone.now()
    result = webhooks.webhook_deliver(delivery_id=delivery.pk)
    finished = timezone.now()

    delivery.refresh_from_db()
    assert result["status"] == delivery.status == WebhookDelivery.Status.FAILED
    assert (delivery.attempts, delivery.last_status_code) == (3, 500)
    assert delivery.last_error == 'HTTP 500 Internal Server Error: {"error": "database unavailable"}'
    # Third attempt failed: the next one waits U(0, 30 · 2²) seconds (full jitter).
    assert started <= delivery.next_attempt_at <= finished + timedelta(seconds=120)
    assert attempts_counted(COMPLETED, "failed") == failed_before + 1


def test_backoff_is_full_jitter_under_an_exponential_ceiling_capped_at_the_maximum(settings):
    settings.WEBHOOK_BACKOFF_BASE_S, settings.WEBHOOK_BACKOFF_MAX_S = 30, 6 * 3600
    for attempt, ceiling in [(1, 30), (2, 60), (5, 480), (10, 15360), (11, 21600), (30, 21600)]:
        delays = [webhooks.backoff_s(attempt) for _ in range(300)]
        assert all(0 <= delay <= ceiling for delay in delays)
        assert max(delays) > ceiling / 2  # spread over the window, not pinned at its start


def test_a_receiver_slower_than_the_timeout_fails_the_attempt(tenant, receiver, settings):
    settings.WEBHOOK_TIMEOUT_S = 0.3
    receiver.hold = True
    delivery = make_delivery(make_endpoint(tenant, receiver.url))

    result = webhooks.webhook_deliver(delivery_id=delivery.pk)
    receiver.release.set()

    delivery.refresh_from_db()
    assert result["status"] == delivery.status == WebhookDelivery.Status.FAILED
    assert delivery.last_status_code is None
    assert delivery.last_error == "Timed out after 0.3 s (ReadTimeout)."
    assert result["duration_ms"] < 5000
    assert len(receiver.requests) == 1


def test_a_refused_connection_fails_with_the_transport_error(tenant):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # closed again below: nothing listens there
    delivery = make_delivery(make_endpoint(tenant, f"http://127.0.0.1:{port}/hook"))

    webhooks.webhook_deliver(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.FAILED
    assert delivery.last_error.startswith("ConnectError:")


def test_a_redirect_is_a_failure_and_is_not_followed(tenant, receiver):
    receiver.status = 302
    delivery = make_delivery(make_endpoint(tenant, receiver.url))

    webhooks.webhook_deliver(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.last_status_code) == (WebhookDelivery.Status.FAILED, 302)
    assert len(receiver.requests) == 1


def test_the_last_allowed_attempt_failing_makes_the_delivery_dead(tenant, receiver, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    receiver.status = 503
    delivery = make_delivery(make_endpoint(tenant, receiver.url))
    dead_before = attempts_counted(COMPLETED, "dead")

    statuses = []
    for _ in range(3):
        statuses.append(webhooks.webhook_deliver(delivery_id=delivery.pk)["status"])
        # Time passes: the retry is due.
        WebhookDelivery.objects.filter(pk=delivery.pk).exclude(next_attempt_at=None).update(
            next_attempt_at=timezone.now() - timedelta(seconds=1)
        )
    after_dead = webhooks.webhook_deliver(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert statuses == ["failed", "failed", "dead"]
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("dead", 3, None)
    assert "skipped" in after_dead
    assert len(receiver.requests) == 3
    assert attempts_counted(COMPLETED, "dead") == dead_before + 1


def test_a_delivery_not_yet_due_or_already_delivered_is_not_sent_again(tenant, receiver):
    endpoint = make_endpoint(tenant, receiver.url)
    not_due = make_delivery(endpoint, status=WebhookDelivery.Status.FAILED, due_in_s=600)
    delivered = make_delivery(endpoint)
    webhooks.webhook_deliver(delivery_id=delivered.pk)

    # The job's message delivered twice (acks_late after a worker crash), and an early retry.
    assert "skipped" in webhooks.webhook_deliver(delivery_id=delivered.pk)
    assert "skipped" in webhooks.webhook_deliver(delivery_id=not_due.pk)
    assert "skipped" in webhooks.webhook_deliver(delivery_id=987654321)
    assert len(receiver.requests) == 1


def test_an_attempt_leases_the_row_so_no_second_worker_starts_while_it_runs(tenant, receiver):
    delivery = make_delivery(make_endpoint(tenant, receiver.url))

    claim = webhooks._claim(delivery.pk)

    delivery.refresh_from_db()
    assert claim.attempt == delivery.attempts == 1
    assert delivery.next_attempt_at > timezone.now() + timedelta(seconds=webhooks.DELIVER_TIME_LIMIT_S)
    assert webhooks._claim(delivery.pk) is None
    assert delivery.pk not in list(webhooks.webhook_deliveries_due(limit=10))


def test_the_outcome_of_a_superseded_attempt_is_not_recorded(tenant, receiver):
    delivery = make_delivery(make_endpoint(tenant, receiver.url))
    stale = webhooks._claim(delivery.pk)
    # Its lease ran out (the worker hung) and another worker took the row: attempt 2.
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    current = webhooks._claim(delivery.pk)
    webhooks._record_outcome(current, webhooks.Outcome(status_code=200, error=""))

    _, written = webhooks._record_outcome(stale, webhooks.Outcome(status_code=500, error="HTTP 500"))

    delivery.refresh_from_db()
    assert written is False
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 2, 200)


def test_a_delivery_to_a_deactivated_endpoint_is_not_sent(tenant, receiver):
    endpoint = make_endpoint(tenant, receiver.url)
    delivery = make_delivery(endpoint)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(is_active=False)

    webhooks.webhook_deliver(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.last_error) == ("dead", "Not sent: the endpoint is inactive.")
    assert receiver.requests == []


def test_a_loopback_endpoint_is_not_contacted_when_private_targets_are_refused(
    tenant, receiver, private_targets_refused
):
    delivery = make_delivery(make_endpoint(tenant, receiver.url))

    webhooks.webhook_deliver(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.FAILED
    assert delivery.last_error.startswith("Refused before connecting: The webhook host '127.0.0.1' resolves to")
    assert "a loopback address" in delivery.last_error
    assert receiver.requests == []


def test_a_name_that_now_resolves_to_an_internal_address_is_refused_at_delivery(
    tenant, receiver, private_targets_refused, monkeypatch
):
    """DNS rebinding: the name was public when the endpoint was saved, it is loopback now."""
    answer = {"ip": "1.1.1.1"}
    real_getaddrinfo = socket.getaddrinfo

    def fake_getaddrinfo(host, *args, **kwargs):
        if host == "hooks.example.com":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer["ip"], 80))]
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    port = receiver.url.split(":")[2].split("/")[0]
    url = f"http://hooks.example.com:{port}/hooks/opsdeck"
    webhooks.webhook_endpoint_validate_url(url)  # accepted while public
    delivery = make_delivery(make_endpoint(tenant, url))
    answer["ip"] = "127.0.0.1"

    webhooks.webhook_deliver(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.FAILED
    assert "'hooks.example.com' resolves to 127.0.0.1, a loopback address" in delivery.last_error
    assert receiver.requests == []


def test_the_connection_goes_to_the_checked_address_with_the_name_in_host(
    tenant, receiver, private_targets_refused, monkeypatch
):
    """A second DNS answer cannot redirect the POST: the client connects to the address that passed
    the check (here loopback is declared public, as a stand-in for a public receiver)."""
    resolutions = []
    port = int(receiver.url.split(":")[2].split("/")[0])

    real_getaddrinfo = socket.getaddrinfo

    def fake_getaddrinfo(host, *args, **kwargs):
        resolutions.append(host)
        if host == "hooks.example.com":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(webhooks, "_refusal_reason", lambda address: None)
    delivery = make_delivery(make_endpoint(tenant, f"http://hooks.example.com:{port}/hooks/opsdeck"))
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)

    webhooks.webhook_deliver(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.DELIVERED
    # The name is looked up once, by the check; the client only parses the address it was given.
    assert resolutions == ["hooks.example.com", "127.0.0.1"]
    (request,) = receiver.requests
    assert request.headers["Host"] == f"hooks.example.com:{port}"


def _resolving(monkeypatch, name: str, address: str) -> list[str]:
    """Make `name` resolve to `address` and count its lookups (addresses resolve as usual)."""
    lookups = []
    real_getaddrinfo = socket.getaddrinfo

    def fake_getaddrinfo(host, port, *args, **kwargs):
        if host == name:
            lookups.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    return lookups


@pytest.mark.parametrize("certificate_for, delivered", [("hooks.example.com", True), ("other.example.com", False)])
def test_https_to_the_checked_address_verifies_the_certificate_against_the_endpoint_name(
    tenant, private_targets_refused, monkeypatch, certificate_for, delivered
):
    """The connection is pinned to an address, yet TLS still sends the name (SNI) and checks the
    certificate against it: pinning cannot be used to talk to the wrong server."""
    ca = trustme.CA()
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(certificate_for).configure_cert(server_tls)
    sni_names = []
    server_tls.sni_callback = lambda sock, name, context: sni_names.append(name)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    monkeypatch.setattr(webhooks, "_http_client", lambda timeout_s: httpx.Client(timeout=timeout_s, verify=client_tls))
    monkeypatch.setattr(webhooks, "_refusal_reason", lambda address: None)  # loopback stands in for public

    with running_receiver(tls=server_tls) as tls_receiver:
        port = tls_receiver.url.split(":")[2].split("/")[0]
        delivery = make_delivery(make_endpoint(tenant, f"https://hooks.example.com:{port}/hooks/opsdeck"))
        lookups = _resolving(monkeypatch, "hooks.example.com", "127.0.0.1")
        webhooks.webhook_deliver(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert lookups == ["hooks.example.com"]
    assert sni_names == ["hooks.example.com"]
    if delivered:
        assert delivery.status == WebhookDelivery.Status.DELIVERED
        assert tls_receiver.requests[0].headers["Host"] == f"hooks.example.com:{port}"
    else:
        assert delivery.status == WebhookDelivery.Status.FAILED
        assert "certificate is not valid for 'hooks.example.com'" in delivery.last_error
        assert tls_receiver.requests == []


# --- Sending due retries --------------------------------------------------------------------------


def test_send_due_queues_only_deliveries_that_are_due(tenant, monkeypatch):
    queued = []
    monkeypatch.setattr(webhook_jobs, "_enqueue_deliveries", lambda ids, **kwargs: queued.append((ids, kwargs)))
    endpoint = make_endpoint(tenant, "http://127.0.0.1:9/hook")
    due_pending = make_delivery(endpoint, due_in_s=-300)
    due_failed = make_delivery(endpoint, status=WebhookDelivery.Status.FAILED, attempts=2, due_in_s=-60)
    make_delivery(endpoint, status=WebhookDelivery.Status.FAILED, attempts=2, due_in_s=600)  # later
    make_delivery(endpoint, status=WebhookDelivery.Status.DELIVERED, due_in_s=-60)
    make_delivery(endpoint, status=WebhookDelivery.Status.DEAD, due_in_s=-60)

    result = webhook_jobs.send_due_webhooks.run_now({})

    assert result == {"queued": 2, "batch_full": False}
    assert queued == [([due_pending.pk, due_failed.pk], {"expires_s": webhooks.SEND_DUE_EXPIRES_S})]
    assert JobRun.objects.get(name="webhooks.send_due").status == JobRun.Status.SUCCEEDED


def test_send_due_takes_at_most_one_batch_oldest_first(tenant, settings, monkeypatch):
    settings.WEBHOOK_SEND_DUE_BATCH = 2
    queued = []
    monkeypatch.setattr(webhook_jobs, "_enqueue_deliveries", lambda ids, **kwargs: queued.extend(ids))
    endpoint = make_endpoint(tenant, "http://127.0.0.1:9/hook")
    _newest, oldest, middle = (make_delivery(endpoint, due_in_s=-s) for s in (10, 300, 100))

    assert webhook_jobs.send_due_webhooks.run_now({}) == {"queued": 2, "batch_full": True}
    assert queued == [oldest.pk, middle.pk]


def test_the_due_query_reads_the_partial_due_index():
    scan = scan_on(
        index_scans(webhooks.webhook_deliveries_due(limit=500), only="recon_webhook_due_idx"),
        "recon_webhook_due_idx",
    )
    assert "next_attempt_at <=" in scan.index_cond


def test_send_due_then_deliver_sends_a_due_retry(tenant, receiver, monkeypatch):
    monkeypatch.setattr(
        webhook_jobs,
        "_enqueue_deliveries",
        lambda ids, **kwargs: [webhook_jobs.deliver_webhook.apply(args=(i,)) for i in ids],
    )
    delivery = make_delivery(make_endpoint(tenant, receiver.url), status=WebhookDelivery.Status.FAILED, attempts=1)

    webhook_jobs.send_due_webhooks.run_now({})

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 2)
    assert len(receiver.requests) == 1


# --- Redelivery --------------------------------------------------------------------------------------


def test_redeliver_resets_a_dead_delivery_keeps_its_attempts_audits_and_sends_it(
    tenant, receiver, monkeypatch, django_capture_on_commit_callbacks
):
    user = get_user_model().objects.create_user(username="ops")
    monkeypatch.setitem(project.celery.app.conf, "task_always_eager", True)
    delivery = make_delivery(make_endpoint(tenant, receiver.url), status=WebhookDelivery.Status.DEAD, attempts=8)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=None, last_error="HTTP 500")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        reset = webhooks.webhook_redeliver(delivery_id=delivery.pk, user=user)
    assert (reset.status, reset.attempts, reset.delivered_at) == ("pending", 8, None)
    assert reset.next_attempt_at <= timezone.now()
    log = ActivityLog.objects.get(action="webhook_redeliver")
    assert (log.entity_type, log.entity_id) == ("reconciliation.webhook_delivery", str(delivery.pk))
    assert log.user_id == user.pk
    assert log.metadata["previous_status"] == "dead"
    assert receiver.requests == []  # not before commit
    for callback in callbacks:
        callback()

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 9, 204)
    assert len(receiver.requests) == 1


def test_redeliver_of_a_missing_delivery_raises_does_not_exist():
    with pytest.raises(WebhookDelivery.DoesNotExist):
        webhooks.webhook_redeliver(delivery_id=987654321, user=None)


def test_bulk_redeliver_resets_many_in_one_update_with_one_audit_row(
    tenant, monkeypatch, django_capture_on_commit_callbacks, django_assert_num_queries
):
    endpoint = make_endpoint(tenant, "http://127.0.0.1:9/hook")
    dead = make_delivery(endpoint, status=WebhookDelivery.Status.DEAD, attempts=8)
    delivered = make_delivery(endpoint, status=WebhookDelivery.Status.DELIVERED, attempts=1)

    with django_capture_on_commit_callbacks(execute=False), django_assert_num_queries(6):
        # savepoint, lock, update, audit row, outbox rows, release
        count = webhooks.webhook_redeliver_bulk(delivery_ids=[dead.pk, delivered.pk, 987654321], user=None)

    assert count == 2
    queued = [kwargs["delivery_id"] for kwargs in OutboxMessage.objects.values_list("kwargs", flat=True)]
    assert sorted(queued) == sorted([dead.pk, delivered.pk])
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"pending"}
    log = ActivityLog.objects.get(action="webhook_redeliver")
    assert sorted(log.metadata["ids"]) == sorted([dead.pk, delivered.pk])


def test_the_deliver_job_is_routed_to_the_webhooks_queue():
    for name in (webhooks.DELIVER_JOB, webhooks.SEND_DUE_JOB):
        assert project.celery.app.amqp.router.route({}, name)["queue"].name == "webhooks"


def test_the_send_due_schedule_runs_every_minute_on_the_webhooks_queue():
    from project.schedules import SCHEDULES

    (schedule,) = [s for s in SCHEDULES if s.job == webhooks.SEND_DUE_JOB]
    assert (schedule.queue, schedule.crontab, schedule.expires_s) == ("webhooks", {"minute": "*"}, 55)
