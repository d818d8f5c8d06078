"""Reconciliation's webhooks: a tenant's endpoints, the execution events queued for them, and
redelivery; the sending itself (signing, the SSRF guard, retries with backoff, dead-lettering) is
the platform's one mechanism, project/webhooks.py, over the WebhookDelivery table (docs/webhooks.md).

`webhook_event_queue` runs inside the transaction that finishes an execution: one INSERT ... SELECT
creates a pending WebhookDelivery per active endpoint subscribed to the event, and after commit one
`webhooks.deliver` job per delivery is queued (ids only); `sender` delivers it. Target addresses
are checked when an endpoint is saved and again at every delivery.
"""

import functools
import secrets

from django.db import connection, transaction
from django.db.models import QuerySet
from django.db.models.functions import Now
from prometheus_client import Counter

from project.activity import activity_record, activity_record_bulk
from project.webhooks import WebhookSender, validate_target_url
from reconciliation.errors import DeliveryNotFound, ReconciliationError
from reconciliation.models import Execution, ReconciliationJob, WebhookDelivery, WebhookEndpoint

_record = functools.partial(activity_record, category="reconciliation")

EVENTS = tuple(WebhookEndpoint.Event.values)
DELIVER_JOB = "webhooks.deliver"
SEND_DUE_JOB = "webhooks.send_due"
WEBHOOKS_QUEUE = "webhooks"

webhook_delivery_attempts_total = Counter(
    "opsdeck_webhook_delivery_attempts_total",
    # Not "opsdeck_webhook_deliveries_total": its family name would collide with the monitoring
    # gauge opsdeck_webhook_deliveries{status} in one registry.
    "Webhook delivery attempts, by event and the delivery's state after the attempt.",
    ["event", "outcome"],
)


def _endpoint_target(delivery: WebhookDelivery) -> tuple[str, str] | None:
    # Read at each attempt: a changed URL or a rotated secret applies to the retries too; a
    # deactivated endpoint's pending deliveries are dead, not sent.
    endpoint = delivery.endpoint
    return (endpoint.url, endpoint.secret) if endpoint.is_active else None


sender = WebhookSender(
    model=WebhookDelivery,
    deliver_job=DELIVER_JOB,
    target=_endpoint_target,
    attempts=webhook_delivery_attempts_total,
    select_related=("endpoint",),
)


def webhook_endpoint_validate_url(url: str) -> None:
    """Raise WebhookTargetRefused unless `url` is http(s) and its host resolves to public addresses only
    (or WEBHOOK_ALLOW_PRIVATE_TARGETS is on)."""
    validate_target_url(url)


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
        tenant_id=tenant.pk,
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
        tenant_id=endpoint.tenant_id,
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
        sender.enqueue_on_commit(delivery_ids)
    return len(delivery_ids)


# --- Delivering (the platform's sender) -------------------------------------------------------------


def webhook_deliver(*, delivery_id: int) -> dict:
    """One delivery attempt, if the delivery is due and free; safe to run any number of times."""
    return sender.deliver(delivery_id)


def webhook_deliveries_due(*, limit: int) -> QuerySet:
    """Ids of deliveries due for an attempt, oldest due first; read from the partial index recon_webhook_due_idx."""
    return sender.due_ids(limit=limit)


# --- Redelivery ------------------------------------------------------------------------------------


@transaction.atomic
def webhook_redeliver(*, delivery_id: int, user, request=None) -> WebhookDelivery:
    """Send a delivery again now, whatever its state (dead, delivered, failed). Attempts are kept:
    a redelivered dead delivery that fails again is dead again. Raises DeliveryNotFound (a 404)."""
    delivery = WebhookDelivery.objects.select_for_update().filter(pk=delivery_id).first()
    if delivery is None:
        raise DeliveryNotFound(f"No webhook delivery {delivery_id}.")
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
        tenant_id=delivery.tenant_id,
    )
    sender.enqueue_on_commit([delivery.pk])
    delivery.refresh_from_db(fields=["next_attempt_at"])
    return delivery


@transaction.atomic
def webhook_redeliver_bulk(*, delivery_ids: list[int], user, request=None) -> int:
    """Redeliver many (the admin action) in one UPDATE and one audit row; returns how many exist."""
    ids = sender.redeliver(delivery_ids)
    if ids:
        activity_record_bulk(
            category="reconciliation",
            action="webhook_redeliver",
            user=user,
            entity_type="reconciliation.webhook_delivery",
            entity_ids=ids,
            request=request,
        )
    return len(ids)
