"""Send read-only analytics and monitoring reads to DATABASE_REPLICA_URL when it is set.

A replica that cannot be reached costs one read at most DB_REPLICA_POOL_TIMEOUT_S: that read, and
every one for the next DB_REPLICA_RETRY_S in this process, goes to the primary instead.
"""

import logging
import time
from contextlib import contextmanager
from contextvars import ContextVar

from django.conf import settings
from django.db import DatabaseError, connections
from prometheus_client import Counter

logger = logging.getLogger("opsdeck.db")
REPLICA_ALIAS = "replica"
# Apps whose reads are always analytics (they own no data they write and read back at once).
REPLICA_APPS = frozenset({"monitoring"})
_reading_from_replica: ContextVar[bool] = ContextVar("reading_from_replica", default=False)
# monotonic time until which this process reads from the primary: the replica failed to connect.
_replica_down_until = 0.0
replica_fallbacks_total = Counter(
    "opsdeck_db_replica_fallbacks_total", "Times the replica could not be reached and reads fell back to the primary."
)


@contextmanager
def read_replica():
    """Route ORM reads in this block to the replica (if one is configured).

    For analytics that tolerate replication lag; never for a read that must see a write just made.
    """
    token = _reading_from_replica.set(True)
    try:
        yield
    finally:
        _reading_from_replica.reset(token)


def replica_usable() -> bool:
    """True when this thread holds (or can open) a connection to the replica right now."""
    global _replica_down_until
    replica = connections[REPLICA_ALIAS]
    if replica.connection is not None:
        return True
    if time.monotonic() < _replica_down_until:
        return False
    try:
        replica.ensure_connection()
    except DatabaseError as exc:
        _replica_down_until = time.monotonic() + settings.DB_REPLICA_RETRY_S
        replica_fallbacks_total.inc()
        logger.warning(
            "read replica unreachable: reading from the primary",
            extra={"retry_in_s": settings.DB_REPLICA_RETRY_S, "error": str(exc).splitlines()[0][:200]},
        )
        return False
    return True


def reset_replica_breaker() -> None:
    global _replica_down_until
    _replica_down_until = 0.0


def replica_alias() -> str:
    """The alias for raw analytics SQL: the replica if configured and reachable, else default."""
    return REPLICA_ALIAS if REPLICA_ALIAS in settings.DATABASES and replica_usable() else "default"


class ReadReplicaRouter:
    def db_for_read(self, model, **hints):
        if REPLICA_ALIAS not in settings.DATABASES:
            return None
        if (_reading_from_replica.get() or model._meta.app_label in REPLICA_APPS) and replica_usable():
            return REPLICA_ALIAS
        return None

    def db_for_write(self, model, **hints):
        return "default"

    def allow_relation(self, obj1, obj2, **hints):
        # The replica holds the same rows as the primary.
        return True

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == "default"
