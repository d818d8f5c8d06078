"""Monthly range partitions for append-mostly tables: created ahead, archived behind.

Any app registers a model partitioned by month on a timestamp column with
`register_monthly_partitions(Model)` in its AppConfig.ready(); the daily `maintain_partitions`
job then keeps PARTITION_MONTHS_BACK months behind and PARTITION_MONTHS_AHEAD ahead. Older
partitions are detached and moved to the `archive` schema, never dropped: an operator dumps
and drops them deliberately (docs/operations.md). Running it again changes nothing.
"""

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.db import connection, transaction

ARCHIVE_SCHEMA = "archive"
# A half-open [start, end) stretch of time; None is unbounded on that side.
ReadWindow = tuple[datetime | None, datetime | None]
_registered: list = []


def register_monthly_partitions(model) -> None:
    if model not in _registered:
        _registered.append(model)


def registered_partitioned_models() -> list:
    return list(_registered)


@dataclass
class PartitionReport:
    table: str
    created: list[str] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)


def month_start(moment: datetime | date) -> date:
    return date(moment.year, moment.month, 1)


def partition_name(table: str, month: date) -> str:
    return f"{table}_{month:%Y_%m}"


def _existing_partitions(table: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT child.relname
            FROM pg_inherits
            JOIN pg_class parent ON parent.oid = pg_inherits.inhparent
            JOIN pg_class child ON child.oid = pg_inherits.inhrelid
            JOIN pg_namespace ns ON ns.oid = parent.relnamespace
            WHERE parent.relname = %s AND ns.nspname = current_schema()
            """,
            [table],
        )
        return [row[0] for row in cursor.fetchall()]


def monthly_read_windows(
    now: datetime, *, months_back: int, since: datetime | None = None, until: datetime | None = None
) -> list[ReadWindow]:
    """Half-open [start, end) windows that tile the whole time line, newest first, for reading a
    monthly-partitioned table one window at a time (None is unbounded).

    This month and everything after it (empty future partitions, the default partition) come
    first, then last month alone, then windows that double (2, 4, 8 ... months) so a sparse
    filter costs a handful of windows, then everything older than the months kept. Windows
    entirely outside [since, until) are left out. Month bounds, not partition names: the tiling
    is complete whatever partitions exist, so a read never misses a row.
    """
    current = datetime(now.year, now.month, 1, tzinfo=UTC)
    oldest_kept = current - relativedelta(months=months_back)
    windows: list[ReadWindow] = [(current, None)]
    end, span = current, 1
    while end > oldest_kept:
        start = max(end - relativedelta(months=span), oldest_kept)
        windows.append((start, end))
        end, span = start, span * 2
    windows.append((None, end))
    return [
        (start, end)
        for start, end in windows
        if (since is None or end is None or end > since) and (until is None or start is None or start < until)
    ]


@dataclass
class PartitionPlan:
    """What maintenance would do now: partitions to create (name, from, to) and to detach and
    archive (moved to the `archive` schema, never dropped)."""

    table: str
    create: list[tuple[str, datetime, datetime]] = field(default_factory=list)
    archive: list[str] = field(default_factory=list)


def plan_monthly_partitions(table: str, *, today: date, months_back: int, months_ahead: int) -> PartitionPlan:
    """The plan maintain_monthly_partitions() carries out, read from the catalog without a change."""
    plan = PartitionPlan(table=table)
    current = month_start(today)
    oldest_kept = current - relativedelta(months=months_back)
    wanted = [oldest_kept + relativedelta(months=n) for n in range(months_back + months_ahead + 1)]
    pattern = re.compile(rf"^{re.escape(table)}_(\d{{4}})_(\d{{2}})$")
    existing = set(_existing_partitions(table))
    for month in wanted:
        name = partition_name(table, month)
        if name not in existing:
            start = datetime(month.year, month.month, 1, tzinfo=UTC)
            plan.create.append((name, start, start + relativedelta(months=1)))
    for name in sorted(existing):
        match = pattern.match(name)
        if match and date(int(match[1]), int(match[2]), 1) < oldest_kept:
            plan.archive.append(name)
    return plan


def maintain_monthly_partitions(table: str, *, today: date, months_back: int, months_ahead: int) -> PartitionReport:
    report = PartitionReport(table=table)
    qn = connection.ops.quote_name
    with transaction.atomic():
        plan = plan_monthly_partitions(table, today=today, months_back=months_back, months_ahead=months_ahead)
        for name, start, end in plan.create:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"CREATE TABLE {qn(name)} PARTITION OF {qn(table)} FOR VALUES FROM (%s) TO (%s)",
                    [start, end],
                )
            report.created.append(name)
        for name in plan.archive:
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {qn(ARCHIVE_SCHEMA)}")
                cursor.execute(f"ALTER TABLE {qn(table)} DETACH PARTITION {qn(name)}")
                cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [f"{ARCHIVE_SCHEMA}.{name}"])
                archived_name = name
                if cursor.fetchone()[0]:
                    # The same month was archived before (months_back raised, then lowered):
                    # keep both copies rather than fail the whole table's maintenance.
                    archived_name = f"{name}_{datetime.now(UTC):%Y%m%d%H%M%S}"
                    cursor.execute(f"ALTER TABLE {qn(name)} RENAME TO {qn(archived_name)}")
                cursor.execute(f"ALTER TABLE {qn(archived_name)} SET SCHEMA {qn(ARCHIVE_SCHEMA)}")
            report.archived.append(f"{ARCHIVE_SCHEMA}.{archived_name}")
    return report


def maintain_all_partitions(today: date | None = None) -> list[PartitionReport]:
    today = today or datetime.now(UTC).date()
    return [
        maintain_monthly_partitions(
            model._meta.db_table,
            today=today,
            months_back=settings.PARTITION_MONTHS_BACK,
            months_ahead=settings.PARTITION_MONTHS_AHEAD,
        )
        for model in registered_partitioned_models()
    ]


def maintain_partitions_after_migrate(sender, using="default", **kwargs) -> None:
    if using == "default":
        maintain_all_partitions()
