"""Index findings: an unused index and a redundant one, made by the test on a model's table, are
found and traced to the model's Meta.indexes entry with the migration that removes them."""

import time

import pytest
from django.db import connection, models
from django.urls import reverse

from monitoring.selectors import indexes
from monitoring.selectors.indexes import find_duplicates
from tasks.models import Task

pytestmark = pytest.mark.django_db

SHORT = models.Index(fields=["title"], name="mon_test_title_idx")
LONG = models.Index(fields=["title", "deadline"], name="mon_test_title_deadline_idx")


@pytest.fixture
def test_indexes(settings, monkeypatch):
    """Two indexes on tasks_task declared in Task.Meta.indexes for the test: (title) is a prefix
    of (title, deadline), so it is redundant; neither has been scanned."""
    settings.MONITORING_UNUSED_INDEX_MIN_BYTES = 0
    monkeypatch.setattr(Task._meta, "indexes", [*Task._meta.indexes, SHORT, LONG])
    with connection.schema_editor() as editor:
        editor.add_index(Task, SHORT)
        editor.add_index(Task, LONG)


def by_name(rows):
    return {row["index"]: row for row in rows}


def test_an_index_no_query_used_is_unused_and_traced_to_its_meta_indexes_entry(test_indexes):
    row = by_name(indexes.index_usage()["indexes"])["mon_test_title_deadline_idx"]
    assert "unused" in row["flags"]
    assert row["idx_scan"] == 0
    assert row["model"] == "tasks.Task"
    assert row["source"] == "Meta.indexes: mon_test_title_deadline_idx"
    assert "RemoveIndexConcurrently(" in row["fix_migration"]
    assert "model_name='task'" in row["fix_migration"]
    assert "name='mon_test_title_deadline_idx'" in row["fix_migration"]


def test_an_index_whose_columns_prefix_another_is_a_duplicate_of_it(test_indexes):
    rows = by_name(indexes.index_usage()["indexes"])
    short = rows["mon_test_title_idx"]
    assert "duplicate" in short["flags"]
    assert short["duplicate_of"] == "mon_test_title_deadline_idx"
    assert short["source"] == "Meta.indexes: mon_test_title_idx"
    assert "name='mon_test_title_idx'" in short["fix_migration"]
    assert "duplicate" not in rows["mon_test_title_deadline_idx"]["flags"]


@pytest.mark.django_db(transaction=True)
def test_an_index_queries_use_is_not_unused(settings):
    """Statistics count only committed work, so this test commits (and drops its index after)."""
    settings.MONITORING_UNUSED_INDEX_MIN_BYTES = 0
    with connection.schema_editor() as editor:
        editor.add_index(Task, LONG)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET enable_seqscan = off")
            cursor.execute("SELECT id FROM tasks_task WHERE title = 'x' AND deadline IS NULL")
            cursor.execute("RESET enable_seqscan")
            cursor.execute("SELECT pg_stat_force_next_flush()")
        deadline = time.monotonic() + 10
        while True:
            row = by_name(indexes.index_usage()["indexes"])["mon_test_title_deadline_idx"]
            if row["idx_scan"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert row["idx_scan"] >= 1
        assert "unused" not in row["flags"]
        # pg_stat_user_indexes.last_idx_scan is new in PostgreSQL 16; before, "last used" is unknown.
        assert (row["last_idx_scan"] is not None) == (connection.pg_version >= 160000)
    finally:
        with connection.schema_editor() as editor:
            editor.remove_index(Task, LONG)


def test_an_invalid_index_is_flagged_with_its_rebuild(test_indexes):
    with connection.cursor() as cursor:  # what a failed CREATE INDEX CONCURRENTLY leaves behind
        cursor.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'mon_test_title_idx'::regclass")
    row = by_name(indexes.index_usage()["indexes"])["mon_test_title_idx"]
    assert "invalid" in row["flags"]
    assert "RemoveIndexConcurrently(" in row["fix_migration"] and "AddIndexConcurrently(" in row["fix_migration"]


def test_index_page_shows_the_findings_and_the_migration(test_indexes, viewer, login):
    body = login(viewer).get(reverse("admin:monitoring_indexes"), {"flag": "duplicate"}).content.decode()
    assert 'id="index-mon_test_title_idx"' in body
    assert "covered by mon_test_title_deadline_idx" in body
    assert "RemoveIndexConcurrently(" in body


def test_partitioned_indexes_are_one_row_traced_to_the_model():
    rows = by_name(indexes.index_usage()["indexes"])
    activity = rows["activity_created_desc_idx"]
    assert activity["model"] == "project.ActivityLog"
    assert activity["partitions"] >= 1
    assert not any(name.startswith("project_activitylog_20") for name in rows)  # no per-partition rows


def _index(oid, *, columns, unique=False, primary=False, constraint=False, method="btree", pred="", valid=True):
    return {
        "indexrelid": oid,
        "indrelid": 1,
        "index": f"i{oid}",
        "method": method,
        "expressions": "",
        "predicate": pred,
        "key_count": len(columns),
        "columns": columns,
        "opclasses": [0] * len(columns),
        "options": [0] * len(columns),
        "is_unique": unique,
        "is_primary": primary,
        "backs_constraint": constraint,
        "is_valid": valid,
    }


def test_duplicate_rules():
    a, ab = _index(1, columns=[1]), _index(2, columns=[1, 2])
    assert find_duplicates([a, ab]) == {1: ab}
    # A unique index is never redundant to a longer one.
    assert find_duplicates([_index(1, columns=[1], unique=True), ab]) == {}
    # Of identical twins the older is kept, and a constraint's index over a plain one.
    twin_old, twin_new = _index(1, columns=[1, 2]), _index(2, columns=[1, 2])
    assert find_duplicates([twin_old, twin_new]) == {2: twin_old}
    pk = _index(3, columns=[1, 2], primary=True)
    assert find_duplicates([pk, twin_new]) == {2: pk}
    # Different predicate, method or an invalid coverer: not a duplicate.
    assert find_duplicates([a, _index(2, columns=[1, 2], pred="(x > 0)")]) == {}
    assert find_duplicates([a, _index(2, columns=[1, 2], method="hash")]) == {}
    assert find_duplicates([a, _index(2, columns=[1, 2], valid=False)]) == {}


def test_the_index_queries_use_is_kept_whichever_is_older():
    """Issue 10, defect 6: the used twin was called "duplicate of" the unused one, which was
    itself "unused": following both findings dropped both."""
    unused_old, used_new = _index(1, columns=[1, 2]), {**_index(2, columns=[1, 2]), "idx_scan": 7}
    assert find_duplicates([unused_old, used_new]) == {1: used_new}
    # A used index is not redundant to a longer one nothing uses (that one goes as unused).
    used_short, unused_long = {**_index(1, columns=[1]), "idx_scan": 3}, _index(2, columns=[1, 2])
    assert find_duplicates([used_short, unused_long]) == {}


@pytest.mark.django_db(transaction=True)
def test_a_big_table_read_by_sequential_scans_is_missing_an_index(settings):
    """A throwaway table with no index, scanned sequentially (statistics count committed work)."""
    settings.MONITORING_MISSING_INDEX_MIN_ROWS = 500
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE mon_test_heap AS SELECT n AS id, md5(n::text) AS label FROM generate_series(1, 600) n"
        )
    try:
        with connection.cursor() as cursor:
            for _ in range(3):
                cursor.execute("SELECT count(*) FROM mon_test_heap WHERE label = 'x'")
            cursor.execute("SELECT pg_stat_force_next_flush()")
        deadline = time.monotonic() + 10
        while True:
            missing = {row["table"]: row for row in indexes.index_usage()["missing_index_tables"]}
            if "mon_test_heap" in missing or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        row = missing["mon_test_heap"]
        assert row["live_rows"] == 600 and row["seq_scan"] >= 3 and row["index_use"] == 0
        assert row["model"] is None  # no Django model stands behind it
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE mon_test_heap")


def _oid(name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::regclass::oid", [name])
        return cursor.fetchone()[0]


def test_exact_bloat_is_measured_on_demand_for_superusers(superuser, viewer, login):
    url = reverse("admin:monitoring_indexes")
    body = login(superuser).get(url, {"exact": _oid("task_priority_idx")}).content.decode()
    assert "Exact (pgstatindex)" in body and "task_priority_idx" in body
    # Not a btree (GIN), no such index, not a number: an answer, never a server error.
    assert login(superuser).get(url, {"exact": _oid("task_tags_gin")}).status_code == 200
    assert login(superuser).get(url, {"exact": 1}).status_code == 200
    assert login(superuser).get(url, {"exact": "x"}).status_code == 404
    # A viewer's page never runs it.
    assert "Exact (pgstatindex)" not in login(viewer).get(url, {"exact": _oid("task_priority_idx")}).content.decode()
    tables_body = login(superuser).get(reverse("admin:monitoring_tables"), {"exact": _oid("tasks_task")}).content
    assert "Exact bloat (pgstattuple_approx)" in tables_body.decode()
