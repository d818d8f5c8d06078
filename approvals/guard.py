"""The automation's guard: hold back when the database struggles, never starve the backlog.

It reads signals of the database, not of the host (a busy worker CPU says nothing about whether
the database can take a batch): lock waits on the versions table, active backends against the
server's connection budget, replication lag when a replica is configured, and the depth of the
automation queue. Any signal over its limit skips the run; after
AUTOMATION_GUARD_MAX_CONSECUTIVE_SKIPS skips in a row the next run goes ahead anyway with one
small batch (AUTOMATION_GUARD_SMALL_BATCH_SIZE) and says so, so a backlog always moves.

The signals come from AUTOMATION_GUARD_PROBE (a dotted path to a function returning
DatabaseSignals): tests pin it, so no test depends on the machine it runs on.
"""

from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.utils.module_loading import import_string

from approvals.broker import automation_queue_length
from approvals.models import Version
from project.db.replica import replication_lag
from project.outbox import BROKER_ERRORS

CONSECUTIVE_SKIPS_CACHE_KEY = "approvals:guard-consecutive-skips:v1"


@dataclass(frozen=True)
class DatabaseSignals:
    lock_waits_on_versions: int  # backends waiting for a lock on the versions table
    active_backends: int  # other backends running a statement now
    connection_budget: int  # max_connections of the server
    replica_lag_s: float | None = None  # None: no replica configured
    queue_depth: int | None = None  # automation runs waiting in the broker; None: unknown


@dataclass(frozen=True)
class GuardVerdict:
    skip: bool
    reason: str | None = None  # why the database looks busy, when it does
    small_batch: bool = False  # run one small batch although it looks busy: too many skips in a row

    @property
    def note(self) -> str | None:
        if self.small_batch:
            return f"one small batch after {settings.AUTOMATION_GUARD_MAX_CONSECUTIVE_SKIPS} skips: {self.reason}"
        return self.reason


def database_signals() -> DatabaseSignals:
    """The guard's default probe: one query on the primary (two with a replica)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT (SELECT count(*) FROM pg_locks
                    WHERE NOT granted AND relation = %s::regclass),
                   (SELECT count(*) FROM pg_stat_activity
                    WHERE state = 'active' AND datname = current_database() AND pid <> pg_backend_pid()),
                   current_setting('max_connections')::int
            """,
            [Version._meta.db_table],
        )
        lock_waits, active, budget = cursor.fetchone()
    return DatabaseSignals(
        lock_waits_on_versions=lock_waits,
        active_backends=active,
        connection_budget=budget,
        replica_lag_s=_replica_lag_s(),
        queue_depth=_queue_depth(),
    )


def _replica_lag_s() -> float | None:
    """The replica's lag (project.db.replica), or None without a replica or when it is unreachable
    (reads then go to the primary, so there is nothing to wait for)."""
    return replication_lag().get("lag_s")


def _queue_depth() -> int | None:
    try:
        return automation_queue_length()
    except BROKER_ERRORS:
        return None


def busy_reason(signals: DatabaseSignals) -> str | None:
    """Why the database is too busy for a batch now, or None."""
    if signals.lock_waits_on_versions > settings.AUTOMATION_GUARD_MAX_LOCK_WAITS:
        return f"lock waits on versions {signals.lock_waits_on_versions} > {settings.AUTOMATION_GUARD_MAX_LOCK_WAITS}"
    backends_max = int(signals.connection_budget * settings.AUTOMATION_GUARD_BACKENDS_MAX_SHARE)
    if signals.active_backends > backends_max:
        return f"active backends {signals.active_backends} > {backends_max} of {signals.connection_budget}"
    lag_max = settings.AUTOMATION_GUARD_MAX_REPLICA_LAG_S
    if signals.replica_lag_s is not None and signals.replica_lag_s > lag_max:
        return f"replica lag {signals.replica_lag_s:.0f}s > {lag_max}s"
    depth_max = settings.AUTOMATION_GUARD_MAX_QUEUE_DEPTH
    if signals.queue_depth is not None and signals.queue_depth > depth_max:
        return f"queue depth {signals.queue_depth} > {depth_max}"
    return None


def guard_verdict(signals: DatabaseSignals, *, consecutive_skips: int) -> GuardVerdict:
    """Skip while the database is busy, but never more than the configured skips in a row."""
    reason = busy_reason(signals)
    if reason is None:
        return GuardVerdict(skip=False)
    if consecutive_skips >= settings.AUTOMATION_GUARD_MAX_CONSECUTIVE_SKIPS:
        return GuardVerdict(skip=False, reason=reason, small_batch=True)
    return GuardVerdict(skip=True, reason=reason)


def guard_check() -> GuardVerdict:
    """Read the probe and the skips so far, and count this skip (or reset the count)."""
    signals = import_string(settings.AUTOMATION_GUARD_PROBE)()
    verdict = guard_verdict(signals, consecutive_skips=cache.get(CONSECUTIVE_SKIPS_CACHE_KEY, 0))
    if verdict.skip:
        try:
            cache.incr(CONSECUTIVE_SKIPS_CACHE_KEY)
        except ValueError:  # no count yet
            cache.set(CONSECUTIVE_SKIPS_CACHE_KEY, 1, timeout=None)
    else:
        cache.delete(CONSECUTIVE_SKIPS_CACHE_KEY)
    return verdict
