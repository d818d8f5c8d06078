"""Materialized views: a registry, refreshes that are recorded, and their staleness.

A domain app creates its view in a migration (with a unique index, which `REFRESH ...
CONCURRENTLY` needs) and registers it in its AppConfig.ready():

    register_materialized_view("mv_job_performance", refresh_every_s=3600, description="...")

The period is defined there only: project/schedules.py derives each view's beat schedule (the
generic project.refresh_materialized_view job on the maintenance queue) from this registry, and
staleness is counted in the same periods.

PostgreSQL records no refresh time, so every refresh (failed ones too) writes a
MaterializedViewRefresh row; `materialized_view_status()` reads staleness from those rows.
"""

import re
import time
import traceback
import zlib
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from psycopg import sql

from project.models import MaterializedViewRefresh

# Lower-case, optionally schema-qualified: the same name then means the same relation whether it
# is quoted (psycopg.sql.Identifier in REFRESH) or parsed (to_regclass in the status query).
_VIEW_NAME = re.compile(r"^(?:[a-z_][a-z0-9_]*\.)?[a-z_][a-z0-9_]*$")
# A view is stale when its last successful refresh is older than this many schedule periods.
STALE_AFTER_PERIODS = 2


class UnknownMaterializedView(LookupError):
    """A refresh was asked for a view nobody registered (job kwargs are editable in the admin)."""


@dataclass(frozen=True)
class MaterializedView:
    name: str
    refresh_every_s: int
    description: str


_registry: dict[str, MaterializedView] = {}


def register_materialized_view(name: str, *, refresh_every_s: int, description: str) -> MaterializedView:
    """Declare a view Opsdeck refreshes and watches. Registering the same view again is a no-op;
    registering a name twice with different settings is a programming error."""
    if not _VIEW_NAME.match(name):
        raise ValueError(f"materialized view name must be a lower-case [schema.]identifier, not {name!r}")
    if refresh_every_s <= 0:
        raise ValueError("refresh_every_s must be positive")
    view = MaterializedView(name=name, refresh_every_s=refresh_every_s, description=description)
    existing = _registry.setdefault(name, view)
    if existing != view:
        raise ValueError(f"materialized view {name!r} is already registered with other settings: {existing}")
    return view


def refresh_crontab(view: MaterializedView) -> dict:
    """The beat crontab that refreshes `view` every refresh_every_s. Views of the same period are
    spread over it by a stable hash of their name, so they do not all refresh in the same minute;
    daily views refresh at night (UTC 01:00 to 04:59)."""
    period_s, spread = view.refresh_every_s, zlib.crc32(view.name.encode())
    if period_s % 60 or not (3600 % period_s == 0 or (period_s % 3600 == 0 and (86400 % period_s == 0))):
        raise ValueError(f"{view.name}: refresh_every_s must divide an hour or a day in whole minutes/hours")
    if period_s < 3600:
        step_min = period_s // 60
        return {"minute": f"{spread % step_min}-59/{step_min}" if step_min > 1 else "*"}
    minute = str(spread % 60)
    if period_s == 3600:
        return {"minute": minute}
    if period_s == 86400:
        return {"minute": minute, "hour": str(1 + spread // 60 % 4)}
    step_h = period_s // 3600
    return {"minute": minute, "hour": f"{spread // 60 % step_h}-23/{step_h}"}


def refresh_expires_s(view: MaterializedView) -> int:
    """A run still queued this close to the next one is dropped: the next one refreshes the same view."""
    return min(view.refresh_every_s * 11 // 12, 3600)


def registered_materialized_views() -> list[MaterializedView]:
    return sorted(_registry.values(), key=lambda view: view.name)


def get_materialized_view(name: str) -> MaterializedView:
    try:
        return _registry[name]
    except KeyError:
        raise UnknownMaterializedView(f"no materialized view named {name!r} is registered") from None


def _identifier(name: str) -> sql.Identifier:
    return sql.Identifier(*name.split("."))


def _is_populated(name: str) -> bool | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT m.ispopulated FROM pg_matviews m"
            " JOIN pg_class c ON c.relname = m.matviewname"
            " JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = m.schemaname"
            " WHERE c.oid = to_regclass(%s)",
            [name],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def refresh_materialized_view(name: str, *, concurrently: bool = True) -> MaterializedViewRefresh:
    """REFRESH MATERIALIZED VIEW [CONCURRENTLY] `name` and record it.

    CONCURRENTLY keeps the view readable during the refresh (it needs a unique index). A view
    that was never populated (created WITH NO DATA) cannot be refreshed concurrently, so its
    first refresh is a plain one; the record says which it was. A failure is recorded as a
    `failed` row and re-raised.
    """
    view = get_materialized_view(name)
    started_at = timezone.now()
    started = time.perf_counter()
    used_concurrently = concurrently
    error = None
    try:
        # A savepoint when called inside a transaction: a failed refresh then leaves a usable
        # transaction behind, in which the failure is recorded.
        with transaction.atomic():
            if concurrently and _is_populated(view.name) is False:
                used_concurrently = False
            with connection.cursor() as cursor:
                # Longer than the connections' 30 s statement_timeout for big views; a short
                # lock_timeout so a refresh waiting behind DDL gives up instead of queueing reads.
                cursor.execute(
                    "SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true)",
                    [f"{settings.MATVIEW_REFRESH_TIMEOUT_S}s", f"{settings.MATVIEW_REFRESH_LOCK_TIMEOUT_S}s"],
                )
                statement = sql.SQL("REFRESH MATERIALIZED VIEW {concurrently}{view}").format(
                    concurrently=sql.SQL("CONCURRENTLY " if used_concurrently else ""),
                    view=_identifier(view.name),
                )
                cursor.execute(statement)
    except Exception as exc:
        error = exc
    if error is not None and not connection.is_usable():
        connection.close()  # the refresh lost its session; record the failure on a new one
    refresh = MaterializedViewRefresh.objects.create(
        view_name=view.name,
        started_at=started_at,
        finished_at=timezone.now(),
        duration_ms=int((time.perf_counter() - started) * 1000),
        status=MaterializedViewRefresh.Status.FAILED if error else MaterializedViewRefresh.Status.OK,
        concurrently=used_concurrently,
        error="".join(traceback.format_exception(error))[-4000:] if error else "",
    )
    if error is not None:
        raise error
    return refresh


_CATALOG_SQL = """
SELECT v.name, m.ispopulated, CASE WHEN m.matviewname IS NOT NULL THEN pg_total_relation_size(c.oid) END
FROM unnest(%s::text[]) AS v(name)
LEFT JOIN pg_class c ON c.oid = to_regclass(v.name) AND c.relkind = 'm'
LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_matviews m ON m.schemaname = n.nspname AND m.matviewname = c.relname
"""


def materialized_view_status() -> list[dict]:
    """Every registered view with its last refresh, staleness and catalog facts (3 queries).

    staleness_s counts from the end of the last *successful* refresh; a view with no recorded
    successful refresh, or not populated, or missing, is stale: nothing proves it is fresh.
    """
    views = registered_materialized_views()
    if not views:
        return []
    names = [view.name for view in views]
    with connection.cursor() as cursor:
        cursor.execute(_CATALOG_SQL, [names])
        catalog = {name: (populated, size) for name, populated, size in cursor.fetchall()}
    last = {
        row.view_name: row
        for row in MaterializedViewRefresh.objects.filter(view_name__in=names)
        .order_by("view_name", "-started_at", "-id")
        .distinct("view_name")
    }
    last_ok = dict(
        MaterializedViewRefresh.objects.filter(Q(view_name__in=names), status=MaterializedViewRefresh.Status.OK)
        .order_by("view_name", "-started_at", "-id")
        .distinct("view_name")
        .values_list("view_name", "finished_at")
    )
    now = timezone.now()
    status = []
    for view in views:
        populated, size_bytes = catalog.get(view.name, (None, None))
        latest = last.get(view.name)
        refreshed_at = last_ok.get(view.name)
        staleness_s = round((now - refreshed_at).total_seconds(), 1) if refreshed_at else None
        status.append(
            {
                "name": view.name,
                "description": view.description,
                "refresh_every_s": view.refresh_every_s,
                "last_refreshed_at": refreshed_at,
                "last_duration_ms": latest.duration_ms if latest else None,
                "last_status": latest.status if latest else None,
                "last_error": latest.error if latest else "",
                "staleness_s": staleness_s,
                "stale": bool(
                    not populated or staleness_s is None or staleness_s > STALE_AFTER_PERIODS * view.refresh_every_s
                ),
                "exists": populated is not None,
                "populated": populated,
                "size_bytes": size_bytes,
            }
        )
    return status
