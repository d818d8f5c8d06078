"""Webhook delivery, one mechanism for every app: signed, retried with backoff, SSRF-guarded,
dead-lettered, redeliverable (docs/webhooks.md).

An app keeps its deliveries in a model derived from project.models.WebhookDeliveryBase and builds
one WebhookSender over it, saying where a delivery goes (`target`) and which Celery job delivers
one (`deliver_job`, taking `delivery_id`):

1. In the write's transaction the app creates pending delivery rows and calls
   `sender.enqueue_on_commit(ids)` (through the outbox: published after commit).
2. `sender.deliver(delivery_id)` claims its row (short transaction, SKIP LOCKED), counts the
   attempt and leases the row past the job's time limit; the POST runs outside any transaction;
   the outcome is written only if the attempt still owns the row (fenced on the attempt number),
   so a redelivered message or a second worker never double-records.
3. A failure schedules the next attempt with exponential backoff and full jitter; after
   WEBHOOK_MAX_ATTEMPTS the delivery is dead. `sender.send_due()` (every minute, the app's
   schedule) queues the deliveries that are due, which also recovers deliveries whose job was lost.
4. `sender.redeliver(ids)` makes any delivery (dead, delivered, failed) due again now.

Target addresses are checked at every delivery (and by apps when a URL is saved), and the
connection goes to the address that was checked: a DNS answer that changes between check and
connect cannot redirect a delivery to an internal service.
"""

import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import certifi
import httpx
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.db.models import Model, QuerySet
from django.db.models.functions import Now
from prometheus_client import Counter

from project.errors import DomainError
from project.models import WebhookDeliveryBase
from project.outbox import outbox_enqueue_many

logger = logging.getLogger("opsdeck.webhooks")

Status = WebhookDeliveryBase.Status
DUE_STATUSES = (Status.PENDING, Status.FAILED)
USER_AGENT = "Opsdeck-Webhooks/1"
URL_MAX_CHARS = 500
ERROR_MAX_CHARS = 1000
RESPONSE_EXCERPT_BYTES = 512


class WebhookTargetRefused(DomainError):
    """The URL is not one Opsdeck will POST to (a 400 naming `url` in the API)."""

    http_code = "webhook_target_refused"
    http_field = "url"


# --- Target checks (the SSRF guard) ----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int
    # The address to connect to (the one that was checked); None when private targets are allowed
    # and the HTTP client resolves the name itself.
    address: str | None


def _refusal_reason(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    # Most specific first: Python counts link-local and 0.0.0.0/8 as "private" too.
    for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    if not address.is_global:  # shared address space (100.64/10) and other special ranges
        return "not globally routable"
    return None


def _parse_target(url: str) -> tuple[str, str, int]:
    if not isinstance(url, str) or not url:
        raise WebhookTargetRefused("The webhook URL is empty.")
    if len(url) > URL_MAX_CHARS:
        raise WebhookTargetRefused(f"The webhook URL is longer than {URL_MAX_CHARS} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookTargetRefused(f"The webhook URL cannot be parsed: {exc}.") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookTargetRefused(f"The webhook URL must use http or https, not {parts.scheme or 'no scheme'!r}.")
    if not parts.hostname:
        raise WebhookTargetRefused("The webhook URL has no host.")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


def resolve_target(url: str) -> Target:
    """Parse and resolve `url`; raise WebhookTargetRefused naming what is wrong with it."""
    scheme, host, port = _parse_target(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookTargetRefused(f"The webhook host {host!r} cannot be resolved: {exc}.") from None
    # An IPv6 link-local answer may carry a zone ("fe80::1%eth0").
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
    if not addresses:
        raise WebhookTargetRefused(f"The webhook host {host!r} resolves to no address.")
    if settings.WEBHOOK_ALLOW_PRIVATE_TARGETS:
        return Target(url=url, scheme=scheme, host=host, port=port, address=None)
    # Every address is checked, not only the first: the client might connect to any of them.
    for address in addresses:
        if reason := _refusal_reason(address):
            raise WebhookTargetRefused(
                f"The webhook host {host!r} resolves to {address}, a {reason} address; only public "
                "addresses are allowed (setting WEBHOOK_ALLOW_PRIVATE_TARGETS)."
            )
    return Target(url=url, scheme=scheme, host=host, port=port, address=str(addresses[0]))


def validate_target_url(url: str) -> None:
    """Raise WebhookTargetRefused unless `url` is http(s) and its host resolves to public addresses
    only (or WEBHOOK_ALLOW_PRIVATE_TARGETS is on)."""
    resolve_target(url)


# --- One attempt -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    delivery_id: int
    attempt: int  # the attempt number this worker owns; the outcome is written only for it
    event: str
    payload: dict
    url: str
    secret: str  # "" sends no signature


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def backoff_s(attempt: int) -> float:
    """Delay before the attempt after `attempt` (1-based): full jitter, uniform in [0, min(cap, base·2^(attempt-1))]."""
    ceiling = min(settings.WEBHOOK_BACKOFF_MAX_S, settings.WEBHOOK_BACKOFF_BASE_S * 2 ** (attempt - 1))
    return random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography


def sign(*, secret: str, timestamp: int, body: bytes) -> str:
    """The X-Opsdeck-Signature value: HMAC-SHA256 of "{timestamp}.{body}" keyed with the secret."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signed_headers(claim: Claim, body: bytes) -> dict[str, str]:
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Opsdeck-Event": claim.event,
        "X-Opsdeck-Delivery": str(claim.delivery_id),
        "X-Opsdeck-Attempt": str(claim.attempt),
        "X-Opsdeck-Timestamp": str(timestamp),
        # The same on every attempt: receivers dedupe on it.
        "Idempotency-Key": str(claim.payload.get("id", claim.delivery_id)),
    }
    if claim.secret:
        headers["X-Opsdeck-Signature"] = sign(secret=claim.secret, timestamp=timestamp, body=body)
    return headers


def post(claim: Claim, *, timeout_s: float, soft_time_limit_s: int) -> Outcome:
    """POST the signed payload; any failure becomes an Outcome with an error, never an exception."""
    try:
        target = resolve_target(claim.url)  # again: the name may resolve elsewhere by now
    except WebhookTargetRefused as exc:
        return Outcome(status_code=None, error=f"Refused before connecting: {exc}")
    body = json.dumps(claim.payload, separators=(",", ":"), ensure_ascii=False).encode()
    headers = signed_headers(claim, body)
    url = httpx.URL(target.url)
    extensions = {}
    if target.address is not None:
        # Connect to the address that was checked; the name stays in Host and in TLS (SNI and
        # certificate verification).
        default_port = 443 if target.scheme == "https" else 80
        headers["Host"] = target.host if target.port == default_port else f"{target.host}:{target.port}"
        url = url.copy_with(host=target.address)
        if target.scheme == "https":
            extensions["sni_hostname"] = target.host
    try:
        # A client per delivery: a pooled connection opened for one host name must not be reused
        # for another name that resolved to the same address. No redirects (a 3xx is a failure,
        # and following it would skip the address check); no proxy variables from the environment.
        with http_client(timeout_s) as client:
            request = client.build_request("POST", url, content=body, headers=headers, extensions=extensions)
            response = client.send(request, stream=True)
            try:
                if 200 <= response.status_code < 300:
                    return Outcome(status_code=response.status_code, error="")
                excerpt = _read_excerpt(response)
                reason = response.reason_phrase or ""
                return Outcome(
                    status_code=response.status_code,
                    error=f"HTTP {response.status_code} {reason}: {excerpt}".strip().rstrip(":"),
                )
            finally:
                response.close()
    except httpx.TimeoutException as exc:
        return Outcome(status_code=None, error=f"Timed out after {timeout_s:g} s ({type(exc).__name__}).")
    except httpx.HTTPError as exc:
        return Outcome(status_code=None, error=f"{type(exc).__name__}: {exc}")
    except SoftTimeLimitExceeded:
        return Outcome(status_code=None, error=f"Stopped by the job's time limit ({soft_time_limit_s} s).")


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the CA bundle costs ~25 ms: once per process, not once per delivery.
    return ssl.create_default_context(cafile=certifi.where())


def http_client(timeout_s: float) -> httpx.Client:
    return httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False, verify=_tls_context())


def _read_excerpt(response: httpx.Response) -> str:
    """The start of the receiver's answer (helps whoever debugs a failure), never the whole body."""
    chunks, size = [], 0
    for chunk in response.iter_raw(RESPONSE_EXCERPT_BYTES):
        chunks.append(chunk)
        size += len(chunk)
        if size >= RESPONSE_EXCERPT_BYTES:
            break
    return b"".join(chunks)[:RESPONSE_EXCERPT_BYTES].decode("utf-8", errors="replace").strip()


# --- The sender: claims, outcomes, retries, redelivery over one app's delivery model -------------


@dataclass(frozen=True)
class WebhookSender:
    """Delivers the rows of `model` (a WebhookDeliveryBase). `target(delivery)` returns (url,
    secret) or None when the delivery must not be sent (its endpoint was deactivated: it is dead).
    `attempts` counts attempts by event and outcome (the app's Prometheus counter)."""

    model: type[Model]
    deliver_job: str
    target: Callable[[Model], tuple[str, str] | None]
    attempts: Counter
    timeout_s: Callable[[], float] = lambda: settings.WEBHOOK_TIMEOUT_S
    select_related: tuple[str, ...] = ()
    # Deliver jobs queued by send_due expire before the next send_due queues the same rows again,
    # so a backed-up queue does not fill with duplicates of the same deliveries.
    send_due_expires_s: int = 55

    # httpx's timeout applies to each network step (connect, send, wait for the response): a stalled
    # receiver is cut off by httpx; the job's limits only catch what httpx cannot (slow DNS).
    def soft_time_limit_s(self) -> int:
        return int(3 * self.timeout_s()) + 10

    def time_limit_s(self) -> int:
        return self.soft_time_limit_s() + 10

    def lease_s(self) -> int:
        # While an attempt is in flight its row is not due: no other worker starts a second POST.
        # Longer than the job's hard limit, so the lease outlives any attempt still running.
        return self.time_limit_s() + 30

    def claim(self, delivery_id: int) -> Claim | None:
        """Take the delivery if it is due and nobody else holds it; count the attempt and lease the row."""
        with transaction.atomic():
            rows = self.model.objects.select_for_update(skip_locked=True, of=("self",))
            delivery = (
                rows.select_related(*self.select_related)
                .filter(pk=delivery_id, status__in=DUE_STATUSES, next_attempt_at__lte=Now())
                .first()
            )
            if delivery is None:
                return None
            target = self.target(delivery)
            if target is None:
                # Deactivated after the event was queued: do not send; redeliver sends it anyway.
                delivery.status, delivery.next_attempt_at = Status.DEAD, None
                delivery.last_error = "Not sent: the endpoint is inactive."
                delivery.save(update_fields=["status", "next_attempt_at", "last_error"])
                self.attempts.labels(event=delivery.event, outcome="dead").inc()
                return None
            delivery.attempts += 1
            delivery.next_attempt_at = Now() + timedelta(seconds=self.lease_s())
            delivery.save(update_fields=["attempts", "next_attempt_at"])
        url, secret = target
        return Claim(delivery.pk, delivery.attempts, delivery.event, delivery.payload, url, secret)

    def record_outcome(self, claim: Claim, outcome: Outcome) -> tuple[str, bool]:
        """Write the outcome if this attempt still owns the row. Returns (new status, written)."""
        if outcome.delivered:
            status, fields = Status.DELIVERED, {"delivered_at": Now(), "next_attempt_at": None}
        elif claim.attempt >= settings.WEBHOOK_MAX_ATTEMPTS:
            status, fields = Status.DEAD, {"next_attempt_at": None}
        else:
            status = Status.FAILED
            fields = {"next_attempt_at": Now() + timedelta(seconds=backoff_s(claim.attempt))}
        written = (
            self.model.objects.filter(pk=claim.delivery_id, attempts=claim.attempt, status__in=DUE_STATUSES)
            # A redelivery or an expired lease gave the row to a newer attempt: its outcome wins.
            .update(
                status=status,
                last_status_code=outcome.status_code,
                last_error=outcome.error[:ERROR_MAX_CHARS],
                **fields,
            )
        )
        return status, bool(written)

    def deliver(self, delivery_id: int) -> dict:
        """One delivery attempt, if the delivery is due and free; safe to run any number of times."""
        claim = self.claim(delivery_id)
        if claim is None:
            return {"delivery_id": delivery_id, "skipped": "not due, not found, or being delivered by another worker"}
        started = time.perf_counter()
        outcome = post(claim, timeout_s=self.timeout_s(), soft_time_limit_s=self.soft_time_limit_s())
        duration_ms = int((time.perf_counter() - started) * 1000)
        status, written = self.record_outcome(claim, outcome)
        self.attempts.labels(event=claim.event, outcome=status).inc()
        result = {
            "delivery_id": delivery_id,
            "attempt": claim.attempt,
            "status": status,
            "status_code": outcome.status_code,
            "duration_ms": duration_ms,
            "superseded": not written,
        }
        log = logger.info if outcome.delivered else logger.warning
        log("webhook attempt", extra={**result, "job": self.deliver_job, "error": outcome.error[:200]})
        return result

    def due_ids(self, *, limit: int) -> QuerySet:
        """Ids of deliveries due for an attempt, oldest due first (give the model a partial index on
        next_attempt_at WHERE status IN ('pending', 'failed'))."""
        return (
            self.model.objects.filter(status__in=DUE_STATUSES, next_attempt_at__lte=Now())
            .order_by("next_attempt_at")
            .values_list("id", flat=True)[:limit]
        )

    def enqueue_on_commit(self, delivery_ids: list[int]) -> None:
        """Through the outbox: published after commit with a bounded wait, or by its relay once the
        broker is back (and send_due sends any due delivery whose job was lost anyway)."""
        outbox_enqueue_many([(self.deliver_job, {"delivery_id": delivery_id}, None) for delivery_id in delivery_ids])

    def enqueue(self, delivery_ids: list[int], *, expires_s: int | None = None) -> None:
        from project.celery import app as celery_app

        # One broker connection for the whole batch.
        with celery_app.producer_or_acquire() as producer:
            for delivery_id in delivery_ids:
                celery_app.send_task(
                    self.deliver_job, kwargs={"delivery_id": delivery_id}, producer=producer, expires=expires_s
                )

    def send_due(self) -> dict:
        """Queue a deliver job for every due delivery (first attempts whose job was lost, and retries)."""
        delivery_ids = list(self.due_ids(limit=settings.WEBHOOK_SEND_DUE_BATCH))
        if delivery_ids:
            self.enqueue(delivery_ids, expires_s=self.send_due_expires_s)
        return {"queued": len(delivery_ids), "batch_full": len(delivery_ids) == settings.WEBHOOK_SEND_DUE_BATCH}

    def redeliver(self, delivery_ids: list[int]) -> list[int]:
        """Make these deliveries due now, whatever their state; attempts are kept (a redelivered dead
        delivery that fails again is dead again). In the caller's transaction, which records who
        asked; their jobs are queued on commit. Returns the ids that exist."""
        ids = list(
            self.model.objects.filter(pk__in=sorted(set(delivery_ids)))
            .order_by("pk")
            .select_for_update()
            .values_list("pk", flat=True)
        )
        self.model.objects.filter(pk__in=ids).update(status=Status.PENDING, next_attempt_at=Now(), delivered_at=None)
        if ids:
            self.enqueue_on_commit(ids)
        return ids
