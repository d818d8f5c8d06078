"""Telling "the database went away" from other database errors.

A PostgreSQL restart or failover terminates in-flight connections (SQLSTATE 57P01 "terminating
connection due to administrator command", or a socket closed with no SQLSTATE at all); a
request caught in it is not broken, it was unlucky, and a retry in a few seconds succeeds. Such
requests answer 503 with Retry-After (project.middleware, project.api.errors), never 500.
"""

import psycopg
from django.db import InterfaceError, OperationalError
from psycopg_pool import PoolTimeout

RETRY_AFTER_S = 5
# 08xxx connection exceptions; 57P01-03 admin/crash shutdown, cannot connect now (starting up).
_GONE_SQLSTATE_PREFIXES = ("08", "57P01", "57P02", "57P03")


def database_unavailable(exc: BaseException) -> bool:
    """True if `exc` says the connection to PostgreSQL was lost or could not be had."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)):
        return False
    if isinstance(exc, (InterfaceError, psycopg.InterfaceError)):
        return True  # "connection already closed": the connection died under us
    cause = exc if isinstance(exc, psycopg.Error) else exc.__cause__
    if isinstance(cause, PoolTimeout):
        return True
    if isinstance(cause, psycopg.Error):
        sqlstate = cause.sqlstate
        if sqlstate is None:
            # Client-side failures carry no SQLSTATE: server closed the connection, connect refused.
            return isinstance(cause, psycopg.OperationalError)
        return sqlstate.startswith(_GONE_SQLSTATE_PREFIXES)
    return False
