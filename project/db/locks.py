"""Named leases, so one job (or one execution, one view refresh) never runs twice at once anywhere.

A lease is a row in `project_lease`, claimed by one upsert that takes the name only when it is
free, expired, or already ours, and released by deleting it. Unlike the session-level advisory
locks it replaces, it is not tied to a PostgreSQL session, so it holds across the many
transactions of a batched job even when PgBouncer in transaction mode hands each of them to a
different server connection (bench/locks.py measured the choice: docs/operations.md).

The price: a holder that dies without releasing keeps the name until the lease expires. Leases
taken inside a job last the job's hard time limit plus a margin (Celery kills the child by then),
and a redelivery of the same message (same holder: the Celery message id) takes its own lease
back at once.
"""

import logging
import uuid
from contextlib import contextmanager
from contextvars import ContextVar

from django.db import DatabaseError, connection, transaction

logger = logging.getLogger("opsdeck.jobs")

# Outside a job (a shell, a test) a lease lasts this long unless it is released first.
DEFAULT_LEASE_S = 330
# Past the job's hard time limit: the child is dead by then, its lease may be taken over.
LEASE_MARGIN_S = 60

# (holder, seconds) of the running job: set by the job runner, read by every lease it takes.
_job_lease_owner: ContextVar[tuple[str, int] | None] = ContextVar("job_lease_owner", default=None)

CLAIM_SQL = """
INSERT INTO project_lease (name, holder, acquired_at, expires_at)
VALUES (%s, %s, statement_timestamp(), statement_timestamp() + make_interval(secs => %s))
ON CONFLICT (name) DO UPDATE
    SET holder = EXCLUDED.holder, acquired_at = EXCLUDED.acquired_at, expires_at = EXCLUDED.expires_at
    WHERE project_lease.expires_at < statement_timestamp() OR project_lease.holder = EXCLUDED.holder
RETURNING holder
"""
RELEASE_SQL = "DELETE FROM project_lease WHERE name = %s AND holder = %s"


@contextmanager
def leases_owned_by(holder: str, time_limit_s: int):
    """Leases taken in this block belong to `holder` and outlive the job's hard time limit."""
    token = _job_lease_owner.set((holder or f"anon:{uuid.uuid4()}", time_limit_s + LEASE_MARGIN_S))
    try:
        yield
    finally:
        _job_lease_owner.reset(token)


@contextmanager
def lease(name: str, *, seconds: int | None = None):
    """Yield True holding the lease `name` for the block, False if someone else holds it.

    Claimed and released in their own statements (autocommit): do not take a lease inside a
    transaction another process must see it from, since it is visible only once committed."""
    owner = _job_lease_owner.get()
    holder = owner[0] if owner else f"anon:{uuid.uuid4()}"
    duration_s = seconds or (owner[1] if owner else DEFAULT_LEASE_S)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(CLAIM_SQL, [name, holder, duration_s])
        acquired = cursor.fetchone() is not None
    try:
        yield acquired
    finally:
        if acquired:
            release(name, holder)


def release(name: str, holder: str) -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute(RELEASE_SQL, [name, holder])
    except DatabaseError as exc:
        # The database went away mid-job: the lease expires on its own, and the job's own error
        # (not this one) is what the run must report.
        logger.warning("lease not released: it will expire", extra={"lease": name, "error": repr(exc)})


def delete_expired_leases() -> int:
    """Leases left by holders that died: harmless (the next claim takes them over), but a
    per-execution name is never claimed again, so sweep them."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM project_lease WHERE expires_at < statement_timestamp()")
        return cursor.rowcount
