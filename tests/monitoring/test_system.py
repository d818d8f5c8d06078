"""Sequences near overflow (bounded by their column's type), wraparound headroom, partition coverage."""

from datetime import UTC, datetime

import pytest
from django.db import connection

from monitoring.selectors import system
from monitoring.selectors.tables import months_ahead, partition_status

pytestmark = pytest.mark.django_db


def test_an_integer_column_on_a_nearly_spent_sequence_is_near_overflow():
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE mon_test_seq (id serial PRIMARY KEY)")  # int4 column, its own sequence
        cursor.execute("SELECT setval('mon_test_seq_id_seq', 2000000000)")
    row = next(s for s in system.sequences() if s["sequence"] == "mon_test_seq_id_seq")
    assert row["table"] == "mon_test_seq" and row["column"] == "id" and row["column_type"] == "integer"
    assert row["limit_value"] == 2**31 - 1
    assert row["used_ratio"] == pytest.approx(2_000_000_000 / (2**31 - 1))
    assert row["near_overflow"] is True
    assert system.sequences()[0]["sequence"] == "mon_test_seq_id_seq"  # the fullest first


def test_wraparound_headroom_is_measured_against_the_limit():
    wrap = system.wraparound()
    assert 0 < wrap["xid_age"] < wrap["xid_limit"] == 2**31 - 3_000_000
    assert wrap["headroom"] == wrap["xid_limit"] - wrap["xid_age"]
    assert len(wrap["oldest_tables"]) == 5


def _month(year, month):
    return datetime(year, month, 1, tzinfo=UTC)


def test_months_ahead_counts_whole_months_after_the_current_one_without_a_gap():
    now = datetime(2026, 11, 23, tzinfo=UTC)
    months = [(_month(2026, m), _month(2026, m + 1)) for m in range(10, 12)] + [(_month(2026, 12), _month(2027, 1))]
    months += [(_month(2027, 1), _month(2027, 2))]
    assert months_ahead(months, now) == 2  # December and January
    assert months_ahead([r for r in months if r[0] != _month(2026, 12)], now) == 0  # a gap right after this month
    assert months_ahead([r for r in months if r[0] != _month(2026, 11)], now) == 0  # this month itself is missing
    assert months_ahead([], now) is None


@pytest.mark.parametrize(
    "months,default_rows,status",
    [(6, 0, "green"), (2, 0, "green"), (1, 0, "amber"), (0, 0, "red"), (6, 5, "red"), (None, 0, "green")],
)
def test_partition_status_is_amber_under_two_months_and_red_at_none_or_with_default_rows(months, default_rows, status):
    assert partition_status(months, default_rows) == status
