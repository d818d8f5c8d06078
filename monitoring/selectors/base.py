"""The one way monitoring reads PostgreSQL: short timeout, rows as dicts, no writes."""

from contextlib import contextmanager

from django.conf import settings
from django.db import connection, transaction


@contextmanager
def catalog_cursor():
    """A cursor in a (sub)transaction with `SET LOCAL statement_timeout` = MONITORING_STATEMENT_TIMEOUT.

    The previous timeout is put back on the way out, so a caller's own transaction keeps its own.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('statement_timeout')")
        previous = cursor.fetchone()[0]
        cursor.execute("SELECT set_config('statement_timeout', %s, true)", [settings.MONITORING_STATEMENT_TIMEOUT])
        try:
            yield cursor
        finally:
            if connection.is_usable() and not connection.needs_rollback:
                cursor.execute("SELECT set_config('statement_timeout', %s, true)", [previous])


def fetch_all(cursor, sql: str, params=None) -> list[dict]:
    cursor.execute(sql, params or [])
    columns = [column.name for column in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def query(sql: str, params=None) -> list[dict]:
    with catalog_cursor() as cursor:
        return fetch_all(cursor, sql, params)


def extension_installed(cursor, name: str) -> bool:
    cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = %s)", [name])
    return cursor.fetchone()[0]


def ratio(part, whole) -> float | None:
    return float(part) / float(whole) if whole else None
