"""Log every SQL statement slower than SLOW_QUERY_MS, with its duration and truncated SQL."""

import logging
import time

from django.conf import settings
from django.db.backends.signals import connection_created

logger = logging.getLogger("opsdeck.slow_query")
MAX_SQL_CHARS = 1000


def slow_query_wrapper(execute, sql, params, many, context):
    started = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        duration_ms = (time.perf_counter() - started) * 1000
        if duration_ms >= settings.SLOW_QUERY_MS:
            logger.warning(
                "slow query",
                extra={
                    "duration_ms": round(duration_ms, 1),
                    "sql": str(sql)[:MAX_SQL_CHARS],
                    "database": context["connection"].alias,
                },
            )


def _install_on_connection(sender, connection, **kwargs):
    if slow_query_wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.append(slow_query_wrapper)


def install_slow_query_logger() -> None:
    from django.db import connections

    connection_created.connect(_install_on_connection, dispatch_uid="opsdeck-slow-query-log")
    for connection in connections.all(initialized_only=True):
        _install_on_connection(None, connection)
