"""Webhooks: signed POSTs to a tenant's endpoints when an execution finishes, retried until dead.

Flow (docs/webhooks.md):
1. `webhook_event_queue` runs inside the transaction that finishes an execution: one INSERT ...
   SELECT creates a pending WebhookDelivery per active endpoint subscribed to the event, and
   after commit one `webhooks.deliver` job per delivery is queued (ids only).
2. `webhooks.deliver` claims its row (short transaction, SKIP LOCKED), counts the attempt and
   leases the row by pushing next_attempt_at past the job's time limit; the POST runs outside
   any transaction; the outcome is written only if the attempt still owns the row (fenced on
   the attempt number), so a redelivered message or a second worker never double-records.
3. A failure schedules the next attempt with exponential backoff and full jitter; after
   WEBHOOK_MAX_ATTEMPTS the delivery is dead. `webhooks.send_due` (every minute) queues the
   deliveries that are due, which also recovers deliveries whose job was lost.

Target addresses are checked when an endpoint is saved and again at every delivery, and the
connection goes to the address that was checked (a DNS answer that changes between check and
connect cannot redirect a delivery to an internal service).
"""

import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import secrets
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import certifi
import httpx
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.db.models.functions import Now
from prometheus_client import Counter

from project.activity import activity_record, activity_record_bulk
from project.outbox import outbox_enqueue_many
from reconciliation.errors import ReconciliationError, WebhookTargetRefused
from reconciliation.models import Execution, ReconciliationJob, WebhookDelivery, WebhookEndpoint

logger = logging.getLogger("opsdeck.webhooks")
_record = functools.partial(activity_record, category="reconciliation")

EVENTS = tuple(WebhookEndpoint.Event.values)
DUE_STATUSES = (WebhookDelivery.Status.PENDING, WebhookDelivery.Status.FAILED)
DELIVER_JOB = "webhooks.deliver"
SEND_DUE_JOB = "webhooks.send_due"
WEBHOOKS_QUEUE = "webhooks"
USER_AGENT = "Opsdeck-Webhooks/1"
ERROR_MAX_CHARS = 1000
RESPONSE_EXCERPT_BYTES = 512
# httpx's timeout applies to each network step (connect, send, wait for the response): a stalled
# receiver is cut off by httpx; these limits only catch what httpx cannot (a slow DNS resolver).
DELIVER_SOFT_TIME_LIMIT_S = int(3 * settings.WEBHOOK_TIMEOUT_S) + 10
DELIVER_TIME_LIMIT_S = DELIVER_SOFT_TIME_LIMIT_S + 10
# While an attempt is in flight its row is not due: no other worker starts a second POST. Longer
# than the job's hard limit, so the lease outlives any attempt that is still running.
LEASE_S = DELIVER_TIME_LIMIT_S + 30
# Deliver jobs queued by send_due expire before the next send_due queues the same rows again, so
# a backed-up queue does not fill with duplicates of the same deliveries.
SEND_DUE_EXPIRES_S = 55

webhook_delivery_attempts_total = Counter(
    "opsdeck_webhook_delivery_attempts_total",
    # Not "opsdeck_webhook_deliveries_total": its family name would collide with the monitoring
    # gauge opsdeck_webhook_deliveries{status} in one registry.
    "Webhook delivery attempts, by event and the delivery's state after the attempt.",
    ["event", "outcome"],
)


# --- Target checks ---------------------------------------------------------------------------------


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


def _resolve_target(url: str) -> Target:
    """Parse and resolve `url`; raise WebhookTargetRefused naming what is wrong with it."""
    if not isinstance(url, str) or not url:
        raise WebhookTargetRefused("The webhook URL is empty.")
    if len(url) > WebhookEndpoint._meta.get_field("url").max_length:
        raise WebhookTargetRefused("The webhook URL is longer than 500 characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookTargetRefused(f"The webhook URL cannot be parsed: {exc}.") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookTargetRefused(f"The webhook URL must use http or https, not {parts.scheme or 'no scheme'!r}.")
    host = parts.hostname
    if not host:
        raise WebhookTargetRefused("The webhook URL has no host.")
    port = port or (443 if scheme == "https" else 80)
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


def webhook_endpoint_validate_url(url: str) -> None:
    """Raise WebhookTargetRefused unless `url` is http(s) and its host resolves to public addresses only
    (or WEBHOOK_ALLOW_PRIVATE_TARGETS is on)."""
    _resolve_target(url)


# --- Endpoints -------------------------------------------------------------------------------------


class WebhookEventsInvalid(ReconciliationError):
    """The events of an endpoint are not a non-empty list of known events (a 400 in the API)."""


def _checked_events(events) -> list[str]:
    unknown = sorted(set(events) - set(EVENTS))
    if unknown or not events:
        raise WebhookEventsInvalid(f"Events must be a non-empty list of {list(EVENTS)}; unknown: {unknown}.")
    return sorted(set(events))


def webhook_secret_generate() -> str:
    return secrets.token_hex(32)


@transaction.atomic
def webhook_endpoint_create(
    *, tenant, url: str, events: list[str], user, secret: str = "", is_active: bool = True, request=None
) -> WebhookEndpoint:
    """Create an endpoint after checking its URL; without a secret, a random one is generated."""
    webhook_endpoint_validate_url(url)
    endpoint = WebhookEndpoint.objects.create(
        tenant=tenant,
        url=url,
        events=_checked_events(events),
        secret=secret or webhook_secret_generate(),
        is_active=is_active,
    )
    _record(
        action="webhook_endpoint_create",
        user=user,
        entity_type="reconciliation.webhook_endpoint",
        entity_id=endpoint.pk,
        metadata={"tenant_id": tenant.pk, "url": url, "events": endpoint.events, "is_active": is_active},
        request=request,
    )
    return endpoint


@transaction.atomic
def webhook_endpoint_update(
    *,
    endpoint: WebhookEndpoint,
    user,
    url: str | None = None,
    events: list[str] | None = None,
    is_active: bool | None = None,
    rotate_secret: bool = False,
    request=None,
) -> WebhookEndpoint:
    """Change an endpoint (the URL is checked again); rotate_secret replaces its secret."""
    changed = {}
    if url is not None and url != endpoint.url:
        webhook_endpoint_validate_url(url)
        endpoint.url = changed["url"] = url
    if events is not None:
        endpoint.events = changed["events"] = _checked_events(events)
    if is_active is not None:
        endpoint.is_active = changed["is_active"] = is_active
    if rotate_secret:
        endpoint.secret = webhook_secret_generate()
    endpoint.save()
    _record(
        action="webhook_endpoint_update",
        user=user,
        entity_type="reconciliation.webhook_endpoint",
        entity_id=endpoint.pk,
        # Never the secret itself: the audit log is readable by more people than the endpoint.
        metadata={**changed, "secret_rotated": rotate_secret},
        request=request,
    )
    return endpoint


# --- Queueing --------------------------------------------------------------------------------------


def webhook_event_queue(*, execution_id: int, event: str) -> int:
    """Create one pending delivery per active endpoint of the execution's tenant subscribed to `event`,
    in one statement, in the caller's transaction; queue their deliver jobs after commit.

    The payload is the execution as it is in this transaction (call it after writing the final
    status and summary). Returns the number of deliveries created.
    """
    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event!r}; one of {EVENTS}")
    delivery_table = WebhookDelivery._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH execution AS (
                SELECT x.id, x.tenant_id, x.job_id, j.name AS job_name, x.status, x.dry_run,
                       x.summary, x.started_at, x.finished_at
                FROM {Execution._meta.db_table} AS x
                JOIN {ReconciliationJob._meta.db_table} AS j ON j.id = x.job_id
                WHERE x.id = %(execution_id)s
            ),
            target AS (
                -- A CTE with a volatile nextval() is evaluated once per row, not inlined: each
                -- delivery gets its id here so the payload can carry it.
                SELECT nextval(pg_get_serial_sequence(%(delivery_table)s, 'id')) AS id,
                       endpoint.id AS endpoint_id
                FROM {WebhookEndpoint._meta.db_table} AS endpoint
                JOIN execution ON execution.tenant_id = endpoint.tenant_id
                WHERE endpoint.is_active AND %(event)s = ANY (endpoint.events)
            )
            INSERT INTO {delivery_table}
                (id, endpoint_id, tenant_id, event, payload, status, attempts, next_attempt_at,
                 last_status_code, last_error, created_at, delivered_at)
            SELECT target.id, target.endpoint_id, execution.tenant_id, %(event)s,
                   jsonb_build_object(
                       'id', target.id,
                       'event', %(event)s,
                       'created_at', statement_timestamp(),
                       'data', jsonb_build_object(
                           'execution_id', execution.id,
                           'job_id', execution.job_id,
                           'job_name', execution.job_name,
                           'tenant_id', execution.tenant_id,
                           'status', execution.status,
                           'dry_run', execution.dry_run,
                           'summary', execution.summary,
                           'started_at', execution.started_at,
                           'finished_at', execution.finished_at
                       )
                   ),
                   'pending', 0, statement_timestamp(), NULL, '', statement_timestamp(), NULL
            FROM target CROSS JOIN execution
            ORDER BY target.id
            RETURNING id
            """,
            {"execution_id": execution_id, "event": event, "delivery_table": delivery_table},
        )
        delivery_ids = [row[0] for row in cursor.fetchall()]
    if delivery_ids:
        # Through the outbox: published after commit with a bounded wait, or by its relay once the
        # broker is back (and send_due sends any due delivery whose job was lost anyway).
        _enqueue_deliveries_on_commit(delivery_ids)
    return len(delivery_ids)


def _enqueue_deliveries_on_commit(delivery_ids: list[int]) -> None:
    outbox_enqueue_many([(DELIVER_JOB, {"delivery_id": delivery_id}, None) for delivery_id in delivery_ids])


# --- Delivering ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    delivery_id: int
    attempt: int  # the attempt number this worker owns; the outcome is written only for it
    event: str
    payload: dict
    url: str
    secret: str


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
    """The X-Opsdeck-Signature value: HMAC-SHA256 of "{timestamp}.{body}" keyed with the endpoint secret."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _claim(delivery_id: int) -> Claim | None:
    """Take the delivery if it is due and nobody else holds it; count the attempt and lease the row."""
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("endpoint")
            .filter(pk=delivery_id, status__in=DUE_STATUSES, next_attempt_at__lte=Now())
            .first()
        )
        if delivery is None:
            return None
        if not delivery.endpoint.is_active:
            # Deactivated after the event was queued: do not send; redeliver sends it anyway.
            delivery.status = WebhookDelivery.Status.DEAD
            delivery.next_attempt_at = None
            delivery.last_error = "Not sent: the endpoint is inactive."
            delivery.save(update_fields=["status", "next_attempt_at", "last_error"])
            webhook_delivery_attempts_total.labels(event=delivery.event, outcome="dead").inc()
            return None
        delivery.attempts += 1
        delivery.next_attempt_at = Now() + timedelta(seconds=LEASE_S)
        delivery.save(update_fields=["attempts", "next_attempt_at"])
    return Claim(
        delivery_id=delivery.pk,
        attempt=delivery.attempts,
        event=delivery.event,
        payload=delivery.payload,
        url=delivery.endpoint.url,
        secret=delivery.endpoint.secret,
    )


def _post(claim: Claim) -> Outcome:
    """POST the signed payload; any failure becomes an Outcome with an error, never an exception."""
    try:
        target = _resolve_target(claim.url)  # again: the name may resolve elsewhere by now
    except WebhookTargetRefused as exc:
        return Outcome(status_code=None, error=f"Refused before connecting: {exc}")
    body = json.dumps(claim.payload, separators=(",", ":"), ensure_ascii=False).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Opsdeck-Event": claim.event,
        "X-Opsdeck-Delivery": str(claim.delivery_id),
        "X-Opsdeck-Attempt": str(claim.attempt),
        "X-Opsdeck-Timestamp": str(timestamp),
        "X-Opsdeck-Signature": sign(secret=claim.secret, timestamp=timestamp, body=body),
    }
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
    timeout_s = settings.WEBHOOK_TIMEOUT_S
    try:
        # A client per delivery: a pooled connection opened for one host name must not be reused
        # for another name that resolved to the same address. No redirects (a 3xx is a failure,
        # and following it would skip the address check); no proxy variables from the environment.
        with _http_client(timeout_s) as client:
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
        return Outcome(status_code=None, error=f"Stopped by the job's time limit ({DELIVER_SOFT_TIME_LIMIT_S} s).")


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the CA bundle costs ~25 ms: once per process, not once per delivery.
    return ssl.create_default_context(cafile=certifi.where())


def _http_client(timeout_s: float) -> httpx.Client:
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


def _record_outcome(claim: Claim, outcome: Outcome) -> tuple[str, bool]:
    """Write the outcome if this attempt still owns the row. Returns (new status, written)."""
    if outcome.delivered:
        status = WebhookDelivery.Status.DELIVERED
        fields = {"delivered_at": Now(), "next_attempt_at": None}
    elif claim.attempt >= settings.WEBHOOK_MAX_ATTEMPTS:
        status = WebhookDelivery.Status.DEAD
        fields = {"next_attempt_at": None}
    else:
        status = WebhookDelivery.Status.FAILED
        fields = {"next_attempt_at": Now() + timedelta(seconds=backoff_s(claim.attempt))}
    written = (
        WebhookDelivery.objects.filter(pk=claim.delivery_id, attempts=claim.attempt, status__in=DUE_STATUSES)
        # A redelivery or an expired lease gave the row to a newer attempt: its outcome wins.
        .update(
            status=status,
            last_status_code=outcome.status_code,
            last_error=outcome.error[:ERROR_MAX_CHARS],
            **fields,
        )
    )
    return status, bool(written)


def webhook_deliver(*, delivery_id: int) -> dict:
    """One delivery attempt, if the delivery is due and free; safe to run any number of times."""
    claim = _claim(delivery_id)
    if claim is None:
        return {"delivery_id": delivery_id, "skipped": "not due, not found, or being delivered by another worker"}
    started = time.perf_counter()
    outcome = _post(claim)
    duration_ms = int((time.perf_counter() - started) * 1000)
    status, written = _record_outcome(claim, outcome)
    webhook_delivery_attempts_total.labels(event=claim.event, outcome=status).inc()
    log = logger.info if outcome.delivered else logger.warning
    log(
        "webhook attempt",
        extra={
            "delivery_id": delivery_id,
            "attempt": claim.attempt,
            "status": status,
            "status_code": outcome.status_code,
            "error": outcome.error[:200],
            "duration_ms": duration_ms,
            "superseded": not written,
        },
    )
    return {
        "delivery_id": delivery_id,
        "attempt": claim.attempt,
        "status": status,
        "status_code": outcome.status_code,
        "duration_ms": duration_ms,
        "superseded": not written,
    }


# --- Retries ---------------------------------------------------------------------------------------


def webhook_deliveries_due(*, limit: int) -> QuerySet:
    """Ids of deliveries due for an attempt, oldest due first; read from the partial index recon_webhook_due_idx."""
    return (
        WebhookDelivery.objects.filter(status__in=DUE_STATUSES, next_attempt_at__lte=Now())
        .order_by("next_attempt_at")
        .values_list("id", flat=True)[:limit]
    )


# --- Redelivery ------------------------------------------------------------------------------------


@transaction.atomic
def webhook_redeliver(*, delivery_id: int, user, request=None) -> WebhookDelivery:
    """Send a delivery again now, whatever its state (dead, delivered, failed). Attempts are kept:
    a redelivered dead delivery that fails again is dead again. Raises WebhookDelivery.DoesNotExist."""
    delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery_id)
    previous_status = delivery.status
    delivery.status = WebhookDelivery.Status.PENDING
    delivery.next_attempt_at = Now()
    delivery.delivered_at = None
    delivery.save(update_fields=["status", "next_attempt_at", "delivered_at"])
    _record(
        action="webhook_redeliver",
        user=user,
        entity_type="reconciliation.webhook_delivery",
        entity_id=delivery.pk,
        metadata={
            "previous_status": previous_status,
            "attempts": delivery.attempts,
            "endpoint_id": delivery.endpoint_id,
        },
        request=request,
    )
    _enqueue_deliveries_on_commit([delivery.pk])
    delivery.refresh_from_db(fields=["next_attempt_at"])
    return delivery


@transaction.atomic
def webhook_redeliver_bulk(*, delivery_ids: list[int], user, request=None) -> int:
    """Redeliver many (the admin action) in one UPDATE and one audit row; returns how many exist."""
    ids = list(
        WebhookDelivery.objects.filter(pk__in=sorted(set(delivery_ids)))
        .order_by("pk")
        .select_for_update()
        .values_list("pk", flat=True)
    )
    WebhookDelivery.objects.filter(pk__in=ids).update(
        status=WebhookDelivery.Status.PENDING, next_attempt_at=Now(), delivered_at=None
    )
    if ids:
        activity_record_bulk(
            category="reconciliation",
            action="webhook_redeliver",
            user=user,
            entity_type="reconciliation.webhook_delivery",
            entity_ids=ids,
            request=request,
        )
        _enqueue_deliveries_on_commit(ids)
    return len(ids)
