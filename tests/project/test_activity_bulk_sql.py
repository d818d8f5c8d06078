"""project.activity.activity_bulk_insert_sql: the bulk act as SQL inside a caller's statement
writes the same row activity_record_bulk writes, and none for an empty batch."""

import pytest
from django.db import connection

from project.activity import activity_bulk_insert_sql, activity_record_bulk
from project.models import ActivityLog

pytestmark = pytest.mark.django_db
FIELDS = ("user_id", "category", "action", "level", "entity_type", "entity_id", "metadata", "tags", "ip")


def run_with_batch(ids: list[int], **kwargs) -> None:
    activity_sql, params = activity_bulk_insert_sql(ids_from="decided", **kwargs)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH decided AS (SELECT unnest(%(ids)s::bigint[]) AS id), activity AS ({activity_sql}) SELECT 1",
            {"ids": ids, "rule_id": 7, **params},
        )


def row_of(action: str) -> dict:
    return ActivityLog.objects.filter(action=action).values(*FIELDS).get()


def test_the_sql_writes_the_row_activity_record_bulk_writes():
    run_with_batch([3, 1, 2], category="approvals", action="sql_batch", entity_type="version",
                   metadata_sql={"rule": "%(rule_id)s"})  # fmt: skip
    activity_record_bulk(category="approvals", action="python_batch", entity_type="version", entity_ids=[1, 2, 3],
                         metadata={"rule": 7})  # fmt: skip

    from_sql, from_python = row_of("sql_batch"), row_of("python_batch")
    assert from_sql["metadata"] == {"ids": [1, 2, 3], "count": 3, "rule": 7}
    assert {**from_sql, "action": ""} == {**from_python, "action": ""}


def test_an_empty_batch_records_nothing():
    run_with_batch([], category="approvals", action="empty_batch", entity_type="version")
    assert not ActivityLog.objects.filter(action="empty_batch").exists()


def test_a_metadata_key_is_a_word_never_sql():
    with pytest.raises(ValueError, match="identifier-like"):
        activity_bulk_insert_sql(ids_from="decided", category="c", action="a", entity_type="e",
                                 metadata_sql={"x', 1) --": "1"})  # fmt: skip
