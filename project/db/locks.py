"""PostgreSQL advisory locks, keyed by a name, so one job never runs twice at once anywhere."""

import zlib
from contextlib import contextmanager

from django.db import connection

# Advisory lock keys share one bigint space per database; this class id keeps Opsdeck's job
# locks apart from any other user of pg_try_advisory_lock(int, int).
JOB_LOCK_CLASS = 0x0D5D


def lock_key(name: str) -> int:
    # crc32 is stable across processes and Python versions (hash() is salted per process).
    return zlib.crc32(name.encode()) - 2**31


@contextmanager
def session_advisory_lock(name: str):
    """Yield True if the lock was taken (and hold it for the block), False if someone holds it.

    Session-level, so it spans the many transactions of a batched job; released on exit and, if
    the process dies, when PostgreSQL closes its connection.
    """
    key = lock_key(name)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [JOB_LOCK_CLASS, key])
        acquired = cursor.fetchone()[0]
    session = connection.connection
    try:
        yield acquired
    finally:
        # If the session that took the lock died, PostgreSQL released the lock with it.
        if acquired and connection.connection is session:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [JOB_LOCK_CLASS, key])
