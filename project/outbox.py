"""The transactional outbox: the one way a write asks for a Celery job.

    outbox_enqueue("reconciliation.run_execution", kwargs={"execution_id": 7})

inside the write's transaction stores an OutboxMessage row. After commit the message is published
with a short, bounded broker timeout (OUTBOX_PUBLISH_TIMEOUT_S, no retries), so a stalled or
absent broker costs a request at most that long, and after one failure the process stops trying
for OUTBOX_BREAKER_S (the rows wait, the request does not). Whatever was not published is
published by the relay: the `project.relay_outbox` job every minute and each worker when it
starts (batches under FOR UPDATE SKIP LOCKED, marked dispatched in one UPDATE).

Why not publish inside the request and fail it on a broker error: the write has committed by
then, and a 5xx after a commit makes a client retry duplicate the write. Why not roll back:
the broker being away is no reason to refuse work PostgreSQL has safely stored.

A message may be published twice (the relay's publish succeeded but marking it failed, or a
worker died after publishing). Jobs are idempotent; jobs with an external side effect wrap it
in `effect_once(key)`, keyed by the message's idempotency key, so it happens once.
"""

import contextlib
import logging
import os
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone
from kombu.exceptions import KombuError
from prometheus_client import Counter
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from project.models import OutboxMessage

logger = logging.getLogger("opsdeck.outbox")
BROKER_ERRORS = (KombuError, RedisError, OSError, TimeoutError)
TIMEOUT_ERRORS = (RedisTimeoutError, TimeoutError)

outbox_published_total = Counter(
    "opsdeck_outbox_published_total", "Outbox messages published, by who published them.", ["by"]
)
outbox_publish_failures_total = Counter(
    "opsdeck_outbox_publish_failures_total", "Failed outbox publish attempts (the rows wait for the relay)."
)

# Monotonic time before which this process does not publish after commit (the broker failed).
_breaker_open_until = 0.0


def outbox_enqueue(job: str, *, kwargs: dict | None = None, queue: str = "", idempotency_key=None) -> OutboxMessage:
    """Store a message for `job` in the current transaction; publish it after commit."""
    return outbox_enqueue_many([(job, kwargs or {}, idempotency_key)], queue=queue)[0]


def outbox_enqueue_many(jobs: list[tuple[str, dict, uuid.UUID | None]], *, queue: str = "") -> list[OutboxMessage]:
    """Many messages in one INSERT, published after commit in one broker connection."""
    messages = OutboxMessage.objects.bulk_create(
        [
            OutboxMessage(job=job, kwargs=kwargs, queue=queue, idempotency_key=key or uuid.uuid4())
            for job, kwargs, key in jobs
        ]
    )
    ids = [message.pk for message in messages]
    if ids:
        # robust: the write has committed; a publish problem is logged and left to the relay.
        transaction.on_commit(lambda: publish_after_commit(ids), robust=True)
    return messages


def publish_after_commit(ids: list[int]) -> int:
    if time.monotonic() < _breaker_open_until:
        return 0  # the broker failed moments ago: the relay publishes these
    return _publish_pending(OutboxMessage.objects.filter(pk__in=ids), by="commit")


def relay(*, batch_size: int | None = None, older_than_s: float | None = None, budget_s: float = 40) -> dict:
    """Publish messages left behind (broker outage, process killed after commit), oldest first."""
    batch_size = batch_size or settings.OUTBOX_RELAY_BATCH
    older_than_s = settings.OUTBOX_RELAY_AFTER_S if older_than_s is None else older_than_s
    deadline = time.monotonic() + budget_s
    published = 0
    while time.monotonic() < deadline:
        cutoff = timezone.now() - timedelta(seconds=older_than_s)
        pending = OutboxMessage.objects.filter(created_at__lte=cutoff)
        count = _publish_pending(pending, by="relay", limit=batch_size)
        published += count
        if count < batch_size:
            break
    figures = outbox_figures()
    from django.core.cache import cache

    cache.set(FIGURES_CACHE_KEY, figures, timeout=300)
    # Published messages past OUTBOX_KEEP_DAYS are removed by retention (project/retention.py).
    return {"published": published, "pending": figures["pending"]}


def pending_count() -> int:
    """Messages not yet published (what the chaos harness watches drain to 0)."""
    return OutboxMessage.objects.filter(dispatched_at__isnull=True).count()


def _locked_unpublished(queryset, limit: int | None) -> list[OutboxMessage]:
    locked = (
        queryset.filter(dispatched_at__isnull=True).order_by("created_at", "id").select_for_update(skip_locked=True)
    )
    return list(locked[:limit] if limit else locked)


def _publish_pending(queryset, *, by: str, limit: int | None = None) -> int:
    """Lock the undispatched rows of `queryset` (skipping rows another publisher holds), publish
    them, and mark the published ones in one UPDATE. Returns how many were published."""
    global _breaker_open_until
    from project.celery import app

    if app.conf.task_always_eager:
        return _run_eagerly(queryset, limit)
    published: list[int] = []
    error: Exception | None = None
    with transaction.atomic():
        rows = _locked_unpublished(queryset, limit)
        if not rows:
            return 0
        try:
            _publish(rows, published)
        except BROKER_ERRORS as exc:
            error = exc
        if published:
            OutboxMessage.objects.filter(pk__in=published).update(
                dispatched_at=Now(), publish_attempts=F("publish_attempts") + 1
            )
        failed = [row.pk for row in rows if row.pk not in set(published)]
        if failed and error is not None:
            OutboxMessage.objects.filter(pk__in=failed).update(
                publish_attempts=F("publish_attempts") + 1, last_error=f"{type(error).__name__}: {error}"[:1000]
            )
    if published:
        outbox_published_total.labels(by=by).inc(len(published))
    if error is not None:
        outbox_publish_failures_total.inc()
        _breaker_open_until = time.monotonic() + settings.OUTBOX_BREAKER_S
        logger.warning(
            "outbox publish failed; messages wait for the relay",
            extra={"by": by, "waiting": len(rows) - len(published), "error": f"{type(error).__name__}: {error}"},
        )
    return len(published)


# One broker connection per process, reused across publishes (a fresh one per write cost ~12 ms:
# connect and declare). Keyed by pid (a forked child must not share its parent's socket) and URL.
_connection_lock = threading.Lock()
_connection: tuple[int, tuple[str, float], object] | None = None


def _broker_connection():
    global _connection
    from project.celery import app

    if _connection is not None and _connection[:2] == _connection_key():
        return _connection[2]
    _drop_connection()
    url, timeout_s = _connection_key()[1]
    options = {
        "socket_connect_timeout": timeout_s,
        "socket_timeout": timeout_s,
        "retry_on_timeout": False,
        "max_retries": 0,  # kombu's ensure_connection: one attempt
    }
    connection_ = app.connection_for_write(url, connect_timeout=timeout_s, transport_options=options)
    _connection = (*_connection_key(), connection_)
    return connection_


def _connection_key() -> tuple[int, tuple[str, float]]:
    from project.celery import app

    return os.getpid(), (app.conf.broker_write_url or app.conf.broker_url, settings.OUTBOX_PUBLISH_TIMEOUT_S)


def _is_timeout(exc: BaseException | None) -> bool:
    # kombu wraps redis' TimeoutError in its own OperationalError: look down the chain.
    while exc is not None:
        if isinstance(exc, TIMEOUT_ERRORS) or "Timeout" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _drop_connection() -> None:
    global _connection
    if _connection is not None and _connection[0] == os.getpid():
        with contextlib.suppress(Exception):  # a broken connection may fail to close; dropped anyway
            _connection[2].release()
    _connection = None


def _publish(rows: list[OutboxMessage], published: list[int]) -> None:
    with _connection_lock:
        reused = _connection is not None and _connection[:2] == _connection_key()
        try:
            _send(_broker_connection(), rows, published)
        except BROKER_ERRORS as exc:
            _drop_connection()
            # A kept connection the broker closed (a Redis restart) fails at once: try a fresh one.
            # Not after a timeout: a stalled broker would then cost the request twice the bound.
            if not reused or _is_timeout(exc):
                raise
            remaining = [row for row in rows if row.pk not in set(published)]
            try:
                _send(_broker_connection(), remaining, published)
            except BROKER_ERRORS:
                _drop_connection()
                raise


def _send(connection_, rows: list[OutboxMessage], published: list[int]) -> None:
    from project.celery import app

    producer = connection_.Producer()
    for row in rows:
        app.send_task(
            row.job,
            kwargs=row.kwargs,
            queue=row.queue or None,
            task_id=str(row.idempotency_key),
            producer=producer,
            retry=False,
            headers={"idempotency_key": str(row.idempotency_key)},
        )
        published.append(row.pk)


def _run_eagerly(queryset, limit: int | None) -> int:
    """CELERY_TASK_ALWAYS_EAGER (tests): run the jobs here, after marking them published, outside
    any transaction as a worker would (send_task ignores eager mode)."""
    from project.celery import app

    with transaction.atomic():
        rows = _locked_unpublished(queryset, limit)
        OutboxMessage.objects.filter(pk__in=[row.pk for row in rows]).update(
            dispatched_at=Now(), publish_attempts=F("publish_attempts") + 1
        )
    if any(row.job not in app.tasks for row in rows):
        app.loader.import_default_modules()  # every app's jobs.py (autodiscovery is lazy)
    for row in rows:
        app.tasks[row.job].apply(kwargs=row.kwargs, task_id=str(row.idempotency_key))
    return len(rows)


@contextmanager
def effect_once(idempotency_key, *, lease_s: float):
    """Yield True if this run may perform the side effect of message `idempotency_key`, False
    if it was done already or another run holds it now. The run leases the message for
    `lease_s` (longer than the effect can take); success marks it done, an exception releases
    the lease so a retry can try again. A key with no message (sent before the outbox) runs."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE project_outboxmessage
               SET effect_leased_until = statement_timestamp() + make_interval(secs => %s)
             WHERE idempotency_key = %s
               AND effect_done_at IS NULL
               AND (effect_leased_until IS NULL OR effect_leased_until < statement_timestamp())
            RETURNING id
            """,
            [lease_s, str(idempotency_key)],
        )
        claimed = cursor.fetchone()
    if claimed is None:
        if OutboxMessage.objects.filter(idempotency_key=idempotency_key).exists():
            yield False
            return
        yield True
        return
    try:
        yield True
    except BaseException:
        OutboxMessage.objects.filter(pk=claimed[0]).update(effect_leased_until=None)
        raise
    OutboxMessage.objects.filter(pk=claimed[0]).update(effect_done_at=Now(), effect_leased_until=None)


FIGURES_CACHE_KEY = "opsdeck:outbox:figures"


def outbox_figures() -> dict:
    """Unpublished messages and the oldest one's age; the relay caches them for /metrics."""
    from django.db.models import Count, Min

    figures = OutboxMessage.objects.filter(dispatched_at__isnull=True).aggregate(
        waiting=Count("id"), oldest=Min("created_at")
    )
    oldest = figures["oldest"]
    return {
        "pending": figures["waiting"],
        "oldest_pending_age_s": (timezone.now() - oldest).total_seconds() if oldest else 0.0,
    }


class OutboxCollector:
    """Scrape-time gauges from the figures the relay cached at its last run (a scrape runs no
    query): alert on an outbox that does not drain (the broker is away or no relay runs)."""

    def collect(self):
        from django.core.cache import cache
        from prometheus_client.core import GaugeMetricFamily

        figures = cache.get(FIGURES_CACHE_KEY)
        if not figures:
            return
        yield GaugeMetricFamily(
            "opsdeck_outbox_pending", "Outbox messages not yet published.", value=figures["pending"]
        )
        yield GaugeMetricFamily(
            "opsdeck_outbox_oldest_pending_age_seconds",
            "Age of the oldest unpublished outbox message at the relay's last run (0 when none).",
            value=figures["oldest_pending_age_s"],
        )
