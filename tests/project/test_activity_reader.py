"""The activity log reader: selector, GET /api/v1/activity/ and the plans of guide 003's reads."""

import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest
from dateutil.relativedelta import relativedelta
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from project.models import ActivityLog
from project.partitions import monthly_read_windows
from project.selectors import ActivityFilters, activity_logs, activity_read_windows
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/activity/"


def this_month_start() -> datetime:
    now = datetime.now(UTC)
    return datetime(now.year, now.month, 1, tzinfo=UTC)


def log(**fields) -> ActivityLog:
    fields.setdefault("category", "tasks")
    fields.setdefault("action", "task_update")
    return ActivityLog.objects.create(**fields)


@pytest.fixture
def superuser(db):
    return UserFactory(is_staff=True, is_superuser=True)


# --- selector -------------------------------------------------------------------------------


def test_filters_narrow_the_log_and_it_reads_newest_first():
    alice, bob = UserFactory(), UserFactory()
    start = this_month_start()
    first = log(user=alice, created_at=start + timedelta(hours=1), metadata={"job_id": 5})
    second = log(user=alice, action="task_create", created_at=start + timedelta(hours=2), tags=["bulk"])
    third = log(
        user=bob,
        category="approvals",
        action="version_approve",
        entity_type="approvals.version",
        entity_id="9",
        created_at=start + timedelta(hours=3),
        level="warning",
    )

    def ids(**filters):
        return [row.id for row in activity_logs(ActivityFilters(**filters))]

    assert ids() == [third.id, second.id, first.id]
    assert ids(user_id=alice.id) == [second.id, first.id]
    assert ids(action="task_create") == [second.id]
    assert ids(category="approvals") == [third.id]
    assert ids(level="warning") == [third.id]
    assert ids(entity_type="approvals.version", entity_id="9") == [third.id]
    assert ids(created_from=start + timedelta(hours=2), created_to=start + timedelta(hours=3)) == [second.id]
    assert ids(metadata={"job_id": 5}) == [first.id]
    assert ids(tag="bulk") == [second.id]


# --- API ------------------------------------------------------------------------------------


def test_the_api_pages_newest_first_by_cursor(client_for, superuser):
    start = this_month_start()
    rows = [log(created_at=start + timedelta(minutes=n)) for n in range(5)]
    client = client_for(superuser)

    first = client.get(URL, {"page_size": 2}).json()
    assert [r["id"] for r in first["results"]] == [rows[4].id, rows[3].id]
    second = client.get(first["next"]).json()
    assert [r["id"] for r in second["results"]] == [rows[2].id, rows[1].id]
    assert reverse("activity-list") == URL


def test_the_api_applies_every_filter(client_for, superuser):
    start = this_month_start()
    match = log(
        user=superuser,
        action="job_create",
        category="reconciliation",
        entity_type="reconciliation.job",
        entity_id="3",
        metadata={"name": "bank"},
        created_at=start + timedelta(hours=1),
    )
    log(
        user=superuser,
        action="job_create",
        category="reconciliation",
        entity_type="reconciliation.job",
        entity_id="4",
        metadata={"name": "ledger"},
        created_at=start + timedelta(hours=2),
    )
    params = {
        "user": superuser.id,
        "category": "reconciliation",
        "action": "job_create",
        "entity_type": "reconciliation.job",
        "entity_id": "3",
        "created_after": start.isoformat(),
        "created_before": (start + timedelta(days=1)).isoformat(),
        "metadata_key": "name",
        "metadata_value": "bank",
    }
    body = client_for(superuser).get(URL, params).json()
    assert [r["id"] for r in body["results"]] == [match.id]
    assert body["results"][0]["username"] == superuser.username


def test_metadata_value_is_matched_as_json_when_it_parses(client_for, superuser):
    start = this_month_start()
    numeric = log(metadata={"job_id": 5}, created_at=start)
    log(metadata={"job_id": "5x"}, created_at=start)
    body = client_for(superuser).get(URL, {"metadata_key": "job_id", "metadata_value": "5"}).json()
    assert [r["id"] for r in body["results"]] == [numeric.id]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"user": "abc"}, "user"),
        ({"user": "0"}, "user"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_before": "2026-13-01T00:00:00Z"}, "created_before"),
        ({"created_after": "2026-02-01T00:00:00Z", "created_before": "2026-01-01T00:00:00Z"}, "created_before"),
        ({"level": "panic"}, "level"),
        ({"metadata_key": "job_id"}, "metadata_value"),
        ({"metadata_value": "5"}, "metadata_key"),
        ({"cursor": "garbage"}, "cursor"),
        ({"page_size": "0"}, "page_size"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(client_for, superuser, params, field):
    response = client_for(superuser).get(URL, params)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert field in error.get("fields", {}) or field in error["message"]


def test_only_staff_read_the_log(client_for):
    # Which rows each staff member reads: tests/reconciliation/test_activity_scope.py.
    assert client_for(UserFactory(is_staff=True)).get(URL).status_code == 200
    assert client_for(UserFactory()).get(URL).status_code == 403
    from rest_framework.test import APIClient

    assert APIClient().get(URL).status_code in (401, 403)


def test_the_query_count_does_not_grow_with_the_page_size(client_for, superuser, django_assert_num_queries):
    start = this_month_start()
    users = [UserFactory() for _ in range(3)]
    for n in range(40):
        log(user=users[n % 3], created_at=start + timedelta(minutes=n))
    client = client_for(superuser)
    counts = []
    for page_size in (1, 10, 30):
        # session, user, one page (users joined): this month's window fills every page
        with django_assert_num_queries(3) as captured:
            response = client.get(URL, {"page_size": page_size})
        assert len(response.json()["results"]) == page_size
        counts.append(len(captured.captured_queries))
    assert counts == [3, 3, 3]
    assert not any("COUNT(" in q["sql"].upper() for q in captured.captured_queries)


def test_a_page_that_reaches_the_end_of_the_log_reads_each_window_once(client_for, superuser):
    """Fewer rows than a page: every month window is asked once, whatever the page size."""
    for n in range(5):
        log(created_at=this_month_start() + timedelta(minutes=n))
    client = client_for(superuser)
    windows = len(activity_read_windows())
    for page_size in (10, 100):
        with CaptureQueriesContext(connection) as captured:
            response = client.get(URL, {"page_size": page_size})
        assert len(response.json()["results"]) == 5 and response.json()["next"] is None
        assert len(captured.captured_queries) == 2 + windows  # session, user, one per window


def test_pages_walk_back_across_months_and_forward_again(client_for, superuser):
    start = this_month_start()
    months = [start - relativedelta(months=back) for back in (0, 1, 2, 5)]
    rows = [log(created_at=month + timedelta(hours=hour)) for month in months for hour in (1, 2)]
    newest_first = [row.id for row in sorted(rows, key=lambda row: row.created_at, reverse=True)]
    client = client_for(superuser)

    seen, url, pages = [], URL + "?page_size=3", []
    while url:
        body = client.get(url).json()
        pages.append(body)
        seen += [entry["id"] for entry in body["results"]]
        url = body["next"]
    assert seen == newest_first

    back = client.get(pages[-1]["previous"]).json()
    assert [entry["id"] for entry in back["results"]] == newest_first[3:6]


def test_the_read_windows_tile_the_whole_time_line_newest_first():
    now = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
    windows = monthly_read_windows(now, months_back=6)
    assert windows[0] == (datetime(2026, 12, 1, tzinfo=UTC), None)
    assert windows[-1][0] is None
    for (start, _), (_, end) in itertools.pairwise(windows):
        assert end == start  # contiguous: no row can fall between two windows
    assert windows[1] == (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    assert windows[-1] == (None, datetime(2026, 6, 1, tzinfo=UTC))  # older than the months kept

    bounded = monthly_read_windows(
        now, months_back=6, since=datetime(2026, 11, 10, tzinfo=UTC), until=datetime(2026, 11, 20, tzinfo=UTC)
    )
    assert bounded == [(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))]


# --- plans ----------------------------------------------------------------------------------


def _plan(queryset, *, only: str | None = None) -> dict:
    """EXPLAIN of `queryset`'s first page, with sequential scans off (tiny test tables).

    With `only`, every other ActivityLog index is dropped in a rolled-back savepoint: on a few
    thousand rows the planner may pick any index per partition as a stand-in, so the test asks
    whether `only` can serve the read (as tests/plans.py does for unpartitioned tables).
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        if only is not None:
            cursor.execute(
                """
                SELECT i.relname FROM pg_index x
                JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
                WHERE t.relname = 'project_activitylog' AND NOT x.indisprimary AND i.relname <> %s
                """,
                [only],
            )
            for (name,) in cursor.fetchall():
                cursor.execute(f'DROP INDEX "{name}"')
        (plan,) = json.loads(queryset[:51].explain(format="json"))
        transaction.set_rollback(True)
    return plan["Plan"]


def _scans_of_partitions(plan: dict) -> list[dict]:
    return [node for node in _nodes(plan) if node.get("Relation Name", "").startswith("project_activitylog_")]


def _assert_every_partition_reads(plan: dict, index: str) -> None:
    """Every partition scan reads a partition of `index`, none reads the table whole."""
    scans = _scans_of_partitions(plan)
    assert scans
    for scan in scans:
        if scan["Node Type"] == "Bitmap Heap Scan":
            continue  # its child, a Bitmap Index Scan, is checked below
        assert "Index" in scan["Node Type"], scan["Node Type"]
    assert _parent_indexes(plan) == {index}


def _nodes(node: dict):
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def _parent_indexes(plan: dict) -> set[str]:
    """The ActivityLog indexes (parent names) whose partition indexes the plan reads."""
    names = {node["Index Name"] for node in _nodes(plan) if "Index Name" in node}
    if not names:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT parent.relname FROM pg_inherits
            JOIN pg_class child ON child.oid = pg_inherits.inhrelid
            JOIN pg_class parent ON parent.oid = pg_inherits.inhparent
            WHERE child.relname = ANY(%s)
            """,
            [list(names)],
        )
        return {row[0] for row in cursor.fetchall()}


def _relations(plan: dict) -> set[str]:
    return {node["Relation Name"] for node in _scans_of_partitions(plan)}


@pytest.fixture
def three_months_of_activity():
    """~2,400 rows over the current and two past months, analyzed, so plans have statistics."""
    users = [UserFactory() for _ in range(20)]
    start = this_month_start()
    months = [start - timedelta(days=62), start - timedelta(days=31), start]
    rows = []
    for n in range(2400):
        month = months[n % 3]
        rows.append(
            ActivityLog(
                user=users[n % 20],
                category=["tasks", "approvals", "reconciliation"][n % 3],
                action=f"act_{n % 40}",
                level="error" if n % 97 == 0 else "info",
                entity_type="task",
                entity_id=str(n % 300),
                metadata={"job_id": n % 500},
                created_at=datetime(month.year, month.month, 1, tzinfo=UTC) + timedelta(minutes=n),
            )
        )
    ActivityLog.objects.bulk_create(rows)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE project_activitylog")
    return users


def test_a_time_bounded_read_touches_only_the_partitions_in_range(three_months_of_activity):
    start = this_month_start()
    plan = _plan(activity_logs(ActivityFilters(created_from=start, created_to=start + timedelta(days=1))))
    assert _relations(plan) == {f"project_activitylog_{start:%Y_%m}"}

    last_month = (start - timedelta(days=1)).replace(day=1)
    two_months = _plan(activity_logs(ActivityFilters(created_from=last_month, created_to=start + timedelta(days=1))))
    assert _relations(two_months) == {f"project_activitylog_{last_month:%Y_%m}", f"project_activitylog_{start:%Y_%m}"}


def test_a_read_without_a_time_range_plans_only_the_partitions_of_its_first_window(three_months_of_activity):
    """What the window walk asks first: this month and later, never the months behind it."""
    start = this_month_start()
    first_window_start, _ = activity_read_windows()[0]
    queryset = activity_logs(ActivityFilters(metadata={"job_id": 17})).filter(created_at__gte=first_window_start)
    relations = _relations(_plan(queryset))
    assert f"project_activitylog_{start:%Y_%m}" in relations
    last_month = (start - timedelta(days=1)).replace(day=1)
    assert f"project_activitylog_{last_month:%Y_%m}" not in relations


@pytest.mark.parametrize(
    ("read", "index"),
    [
        ("recent", "activity_created_desc_idx"),
        ("timeline", "activity_user_created_idx"),
        ("action", "activity_action_created_idx"),
        ("level", "activity_level_created_idx"),
        ("entity", "activity_entity_idx"),
        ("metadata", "activity_metadata_path_gin"),
    ],
)
def test_each_read_is_served_by_the_index_named_for_it(three_months_of_activity, read, index):
    filters = {
        "recent": ActivityFilters(),
        "timeline": ActivityFilters(user_id=three_months_of_activity[0].id),
        "action": ActivityFilters(category="tasks", action="act_3"),
        "level": ActivityFilters(level="error"),
        "entity": ActivityFilters(entity_type="task", entity_id="17"),
        "metadata": ActivityFilters(metadata={"job_id": 17}),
    }[read]
    plan = _plan(activity_logs(filters), only=index)
    _assert_every_partition_reads(plan, index)
    if read != "recent":
        # The filter is the index condition, not a filter applied to rows read in time order.
        conditions = " ".join(node.get("Index Cond", "") for node in _nodes(plan))
        column = {
            "timeline": "user_id",
            "action": "action",
            "level": "level",
            "entity": "entity_type",
            "metadata": "metadata",
        }[read]
        assert column in conditions, conditions


def test_the_user_foreign_key_has_no_redundant_index_of_its_own():
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT i.relname FROM pg_index x
            JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
            WHERE t.relname = 'project_activitylog'
            """
        )
        names = {row[0] for row in cursor.fetchall()}
    assert "activity_user_created_idx" in names
    assert not [name for name in names if name.startswith("project_activitylog_user_id")]


def test_the_action_index_is_valid_and_on_every_partition():
    """Migration 0004 builds it partition by partition (CONCURRENTLY) and attaches each: the
    parent's index is only valid when every partition has its own."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'activity_action_created_idx'::regclass")
        assert cursor.fetchone() == (True,)
        cursor.execute(
            """
            SELECT count(*) FILTER (WHERE NOT EXISTS (
                SELECT 1 FROM pg_inherits child_index
                JOIN pg_index x ON x.indexrelid = child_index.inhrelid
                WHERE child_index.inhparent = 'activity_action_created_idx'::regclass
                  AND x.indrelid = partition.inhrelid)), count(*)
            FROM pg_inherits partition WHERE partition.inhparent = 'project_activitylog'::regclass
            """
        )
        missing, partitions = cursor.fetchone()
    assert partitions > 1 and missing == 0


def test_an_act_without_a_user_lists_with_a_null_username_the_schema_allows(client_for, superuser):
    log(user=None, metadata={}, created_at=this_month_start())

    body = client_for(superuser).get(URL).json()
    schema = client_for(superuser).get("/api/schema/?format=json").json()

    assert [row["username"] for row in body["results"]] == [None]
    assert schema["components"]["schemas"]["ActivityLog"]["properties"]["username"].get("nullable") is True
