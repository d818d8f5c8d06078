"""Monthly partitions: created ahead, detached and archived behind, never dropped."""

from datetime import UTC, date, datetime

import pytest
from django.db import connection
from django.utils import timezone

from project.activity import activity_record
from project.models import ActivityLog
from project.partitions import (
    ARCHIVE_SCHEMA,
    maintain_monthly_partitions,
    partition_name,
    registered_partitioned_models,
)

pytestmark = pytest.mark.django_db

TABLE = "t_part"


def sql(statement: str, params=None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def attached_partitions(table: str) -> list[str]:
    rows = sql(
        """
        SELECT child.relname FROM pg_inherits
        JOIN pg_class parent ON parent.oid = pg_inherits.inhparent
        JOIN pg_class child ON child.oid = pg_inherits.inhrelid
        WHERE parent.relname = %s ORDER BY child.relname
        """,
        [table],
    )
    return [row[0] for row in rows]


def tables_in_schema(schema: str, prefix: str) -> list[str]:
    rows = sql(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE %s ORDER BY tablename",
        [schema, f"{prefix}%"],
    )
    return [row[0] for row in rows]


def maintain(today: date):
    return maintain_monthly_partitions(TABLE, today=today, months_back=6, months_ahead=6)


@pytest.fixture
def partitioned_table():
    # DDL is transactional in PostgreSQL: the test's rollback removes the table and its partitions.
    sql(f"CREATE TABLE {TABLE} (id bigint, created_at timestamptz NOT NULL) PARTITION BY RANGE (created_at)")
    return TABLE


def test_maintenance_creates_six_months_back_and_ahead(partitioned_table):
    report = maintain(date(2026, 11, 23))

    expected = [
        "t_part_2026_05",
        "t_part_2026_06",
        "t_part_2026_07",
        "t_part_2026_08",
        "t_part_2026_09",
        "t_part_2026_10",
        "t_part_2026_11",
        "t_part_2026_12",
        "t_part_2027_01",
        "t_part_2027_02",
        "t_part_2027_03",
        "t_part_2027_04",
        "t_part_2027_05",
    ]
    assert len(expected) == 13
    assert report.created == expected
    assert report.archived == []
    assert attached_partitions(TABLE) == expected


def test_partition_bounds_are_whole_utc_months(partitioned_table):
    maintain(date(2026, 11, 23))
    sql(
        f"INSERT INTO {TABLE} VALUES (1, %s), (2, %s)",
        [datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)],
    )

    rows = sql(f"SELECT id, tableoid::regclass::text FROM {TABLE} ORDER BY id")

    assert rows == [(1, "t_part_2026_11"), (2, "t_part_2026_12")]


def test_maintenance_run_again_changes_nothing(partitioned_table):
    maintain(date(2026, 11, 23))
    before = attached_partitions(TABLE)

    again = maintain(date(2026, 11, 23))

    assert again.created == []
    assert again.archived == []
    assert attached_partitions(TABLE) == before


def test_old_partitions_are_archived_with_their_rows_never_dropped(partitioned_table):
    maintain(date(2026, 11, 23))
    sql(f"INSERT INTO {TABLE} VALUES (42, %s)", [datetime(2026, 5, 17, 9, 30, tzinfo=UTC)])

    report = maintain(date(2027, 1, 10))

    assert report.archived == ["archive.t_part_2026_05", "archive.t_part_2026_06"]
    assert report.created == ["t_part_2027_06", "t_part_2027_07"]
    assert "t_part_2026_05" not in attached_partitions(TABLE)
    assert "t_part_2026_06" not in attached_partitions(TABLE)
    assert attached_partitions(TABLE)[0] == "t_part_2026_07"
    assert tables_in_schema(ARCHIVE_SCHEMA, "t_part_") == ["t_part_2026_05", "t_part_2026_06"]
    assert sql(f"SELECT id FROM {ARCHIVE_SCHEMA}.t_part_2026_05") == [(42,)]
    assert sql(f"SELECT id FROM {TABLE} WHERE id = 42") == []

    third = maintain(date(2027, 1, 10))

    assert (third.created, third.archived) == ([], [])
    assert sql(f"SELECT id FROM {ARCHIVE_SCHEMA}.t_part_2026_05") == [(42,)]


def test_a_month_archived_twice_keeps_both_copies(partitioned_table):
    maintain(date(2026, 11, 23))
    sql(f"INSERT INTO {TABLE} VALUES (1, %s)", [datetime(2026, 5, 2, tzinfo=UTC)])
    maintain(date(2027, 1, 10))  # archives 2026_05
    # Someone re-creates May 2026 (e.g. months_back raised) and writes to it; lowering it again
    # archives the same month a second time.
    sql(f"CREATE TABLE t_part_2026_05 PARTITION OF {TABLE} FOR VALUES FROM ('2026-05-01') TO ('2026-06-01')")
    sql(f"INSERT INTO {TABLE} VALUES (2, %s)", [datetime(2026, 5, 3, tzinfo=UTC)])

    report = maintain(date(2027, 1, 10))

    (second_copy,) = report.archived
    assert second_copy.startswith("archive.t_part_2026_05_")
    assert sql(f"SELECT id FROM {ARCHIVE_SCHEMA}.t_part_2026_05") == [(1,)]
    assert sql(f"SELECT id FROM {second_copy}") == [(2,)]


def test_partition_name_is_table_year_month():
    assert partition_name("project_activitylog", date(2027, 3, 1)) == "project_activitylog_2027_03"


def test_activity_log_is_registered_for_partition_maintenance():
    assert ActivityLog in registered_partitioned_models()


def test_activity_log_has_monthly_partitions_covering_now_after_migrate():
    table = ActivityLog._meta.db_table
    now = timezone.now()
    this_month = partition_name(table, date(now.year, now.month, 1))

    activity_record(category="tests", action="partition_probe", entity_type="task", entity_id=7)

    assert this_month in attached_partitions(table)
    row = ActivityLog.objects.get(category="tests", action="partition_probe")
    assert row.entity_id == "7"
    # The row lands in this month's partition, not in the default one.
    [(partition,)] = sql(f"SELECT tableoid::regclass::text FROM {table} WHERE action = 'partition_probe'")
    assert partition == this_month
