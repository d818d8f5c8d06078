"""Send read-only analytics and monitoring reads to DATABASE_REPLICA_URL when it is set."""

from contextlib import contextmanager
from contextvars import ContextVar

from django.conf import settings

REPLICA_ALIAS = "replica"
# Apps whose reads are always analytics (they own no data they write and read back at once).
REPLICA_APPS = frozenset({"monitoring"})
_reading_from_replica: ContextVar[bool] = ContextVar("reading_from_replica", default=False)


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


def replica_alias() -> str:
    """The alias for raw analytics SQL: the replica if configured, else default."""
    return REPLICA_ALIAS if REPLICA_ALIAS in settings.DATABASES else "default"


class ReadReplicaRouter:
    def db_for_read(self, model, **hints):
        if REPLICA_ALIAS not in settings.DATABASES:
            return None
        if _reading_from_replica.get() or model._meta.app_label in REPLICA_APPS:
            return REPLICA_ALIAS
        return None

    def db_for_write(self, model, **hints):
        return "default"

    def allow_relation(self, obj1, obj2, **hints):
        # The replica holds the same rows as the primary.
        return True

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == "default"
