"""Index advisor: on a 150k-row scratch table, the statements that lack an index (an equality
filter, an equality + ORDER BY, a join column, a range) each get the right btree, from what
pg_stat_statements recorded; with HypoPG each one's cost reduction is measured by the planner.

The HypoPG tests run against a server that has the extension (the embedded PostgreSQL 18 has
not: see docs/monitoring.md), by default the machine's PostgreSQL at OPSDECK_HYPOPG_DSN, and skip
where there is none.
"""

import os
import time
import uuid

import pytest
from django.db import connection
from django.urls import reverse

from monitoring.advisor import Relation, analyze, candidates_for, covered_by, parse
from monitoring.selectors import advisor, indexes

SCHEMA = "advisor_scratch"
SETUP = f"""
CREATE SCHEMA {SCHEMA};
CREATE TABLE {SCHEMA}.accounts (id int PRIMARY KEY, handle text NOT NULL UNIQUE);
INSERT INTO {SCHEMA}.accounts SELECT g, 'acct-' || g FROM generate_series(1, 50000) AS g;
CREATE TABLE {SCHEMA}.orders (
    id bigint PRIMARY KEY, account_id int NOT NULL, customer_id int NOT NULL, sku text NOT NULL,
    amount numeric(12, 2) NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO {SCHEMA}.orders
SELECT g, 1 + (g * 7919) % 50000, 1 + (g * 104729) % 20000, 'sku-' || (g * 31) % 30000, (g % 1000) / 10.0,
       timestamptz '2026-01-01' + g * interval '1 minute'
FROM generate_series(1::bigint, 150000) AS g;
ANALYZE {SCHEMA}.accounts, {SCHEMA}.orders;
"""

# (statement as the application sends it, its parameters, the index it needs)
EQUALITY = (f"SELECT id, amount FROM {SCHEMA}.orders WHERE sku = %s", ["sku-{}"], ["sku"])
EQUALITY_ORDER = (
    f"SELECT id, amount FROM {SCHEMA}.orders WHERE customer_id = %s ORDER BY created_at DESC LIMIT 10",
    ["{}"],
    ["customer_id", "created_at"],
)
JOIN = (
    f"SELECT o.id, o.amount FROM {SCHEMA}.orders o JOIN {SCHEMA}.accounts a ON a.id = o.account_id WHERE a.handle = %s",
    ["acct-{}"],
    ["account_id"],
)
RANGE = (f"SELECT count(*) FROM {SCHEMA}.orders WHERE created_at >= %s", ["2026-04-{:02d}"], ["created_at"])
CASES = {"equality": EQUALITY, "equality+order": EQUALITY_ORDER, "join": JOIN, "range": RANGE}


def normalized(sql: str) -> str:
    """The text pg_stat_statements records for `sql`: constants become $1, $2, ..."""
    parts = sql.replace("LIMIT 10", "LIMIT %s").split("%s")
    return "".join(part + (f"${i}" if i < len(parts) else "") for i, part in enumerate(parts, start=1))


def by_columns(advice: dict, table: str = "orders") -> dict[tuple, dict]:
    return {tuple(s["columns"]): s for s in advice["suggestions"] if s["schema"] == SCHEMA and s["table"] == table}


# --- parsing (no database) ------------------------------------------------------------------------

COLUMNS = {
    Relation(SCHEMA, "orders"): {"id", "account_id", "customer_id", "sku", "amount", "created_at"},
    Relation(SCHEMA, "accounts"): {"id", "handle"},
}


def candidates(sql: str):
    parsed = analyze(parse(sql), lambda relation: COLUMNS.get(relation, set()))
    return {
        relation.name: [c.columns() for c in candidates_for(use, has_limit=parsed.has_limit)]
        for relation, use in parsed.tables.items()
    }


def test_aliases_and_unqualified_columns_resolve_to_their_tables():
    found = candidates(
        f"SELECT o.id FROM {SCHEMA}.orders o, {SCHEMA}.accounts a "
        "WHERE handle = $1 AND a.id = account_id AND o.customer_id IN ($2, $3)"
    )
    assert found == {"accounts": [["handle"], ["id"]], "orders": [["customer_id"], ["account_id"]]}


def test_equality_columns_come_before_the_one_range_column():
    found = candidates(f"SELECT * FROM {SCHEMA}.orders WHERE $1 < created_at AND sku = $2 ORDER BY amount LIMIT $3")
    assert found == {"orders": [["sku", "created_at"]]}


def test_a_correlated_subquery_joins_on_its_outer_column():
    found = candidates(
        f"SELECT * FROM {SCHEMA}.accounts a WHERE EXISTS (SELECT 1 FROM {SCHEMA}.orders o WHERE o.account_id = a.id)"
    )
    assert found == {"orders": [["account_id"]], "accounts": [["id"]]}


def test_an_index_whose_leading_columns_match_covers_a_candidate_in_any_equality_order():
    parsed = analyze(parse(normalized(EQUALITY_ORDER[0])), lambda relation: COLUMNS[relation])
    (candidate,) = candidates_for(parsed.tables[Relation(SCHEMA, "orders")], has_limit=True)
    assert covered_by(candidate, [["customer_id", "created_at", "id"]]) == ["customer_id", "created_at", "id"]
    assert covered_by(candidate, [["created_at", "customer_id"]]) is None
    assert covered_by(candidate, [["customer_id"]]) is None


def test_statements_that_are_not_queries_give_no_candidates():
    assert analyze(parse("EXPLAIN SELECT 1"), lambda relation: set()).tables == {}
    assert parse("SELECT * FROM truncated WHERE") is None


# --- from pg_stat_statements, on the test database (no HypoPG) -------------------------------------


@pytest.fixture
def scratch_statements(db, with_pg_stat_statements, settings):
    """The scratch tables, and each case's statement run 5 times with different values, so that
    pg_stat_statements has them (this database's entries only: no reset needed)."""
    settings.MONITORING_ADVISOR_MIN_CALLS = 5
    with connection.cursor() as cursor:
        cursor.execute(SETUP)
        for sql, params, _columns in CASES.values():
            for i in range(1, 6):
                cursor.execute(sql, [p.format(i) for p in params])
                cursor.fetchall()


@pytest.mark.django_db
def test_the_advisor_suggests_the_right_index_for_each_statement_from_pg_stat_statements(scratch_statements):
    advice = advisor.index_advice(limit=1000)
    suggestions = by_columns(advice)
    for kind, (sql, _params, columns) in CASES.items():
        suggestion = suggestions[tuple(columns)]
        assert kind in suggestion["serves"]
        (statement,) = [s for s in suggestion["statements"] if s["query"] == normalized(sql)]
        assert statement["calls"] >= 5
        assert statement["total_exec_ms"] > 0
        assert statement["seq_scan_now"], kind  # what it costs today is what the planner does today
        assert statement["cost_now"] > 0
        assert suggestion["create_sql"] == (
            f'CREATE INDEX CONCURRENTLY "orders_{"_".join(columns)}_idx" ON "{SCHEMA}"."orders" '
            f"({', '.join(f'{chr(34)}{c}{chr(34)}' for c in columns)})"
        )
    assert set(suggestions) == {tuple(case[2]) for case in CASES.values()}
    # The join's other side, accounts.handle and accounts.id, is served by its unique index and key.
    assert by_columns(advice, "accounts") == {}


@pytest.mark.django_db
def test_without_hypopg_a_suggestion_is_unverified_with_the_selectivity_of_pg_stats(scratch_statements):
    advice = advisor.index_advice(limit=1000)
    if advice["hypopg"]:
        pytest.skip("this database has HypoPG: see the verified tests")
    assert "CREATE EXTENSION hypopg" in advice["message"]
    sku = by_columns(advice)[("sku",)]
    assert sku["status"] == "unverified"
    assert sku["cost_reduction"] is None
    (evidence,) = sku["evidence"]
    assert evidence["column"] == "sku"
    assert evidence["analyzed"] and evidence["null_frac"] == 0
    assert 3 <= evidence["rows_per_value"] <= 10  # 150,000 rows over 30,000 skus: 5 each


@pytest.mark.django_db
def test_parameters_are_placed_from_pg_stats_or_else_planned_generically(scratch_statements):
    """An array parameter gets an array of a typical value; a parameter the advisor cannot tie to
    a column (LIKE) leaves PostgreSQL 16+ its generic plan."""
    rows = [
        {"queryid": 1, "query": f"SELECT id FROM {SCHEMA}.orders WHERE customer_id = ANY($1)"},
        {"queryid": 2, "query": f"SELECT id FROM {SCHEMA}.orders WHERE sku = $1 AND amount::text LIKE $2"},
    ]
    rows = [{**row, "calls": 5, "total_exec_ms": 1.0, "mean_exec_ms": 0.2} for row in rows]
    with connection.cursor() as cursor:
        advice = advisor.advise(cursor, rows)
    planned = {s["queryid"]: s for suggestion in by_columns(advice).values() for s in suggestion["statements"]}
    assert planned[1]["plan_method"] == "representative parameters"
    assert planned[1]["cost_now"] > 0 and planned[1]["plan_error"] is None
    if connection.pg_version >= 160000:
        assert planned[2]["plan_method"] == "generic plan"
        assert planned[2]["cost_now"] > 0
    else:
        assert planned[2]["cost_now"] is None and "GENERIC_PLAN" in planned[2]["plan_error"]


@pytest.mark.django_db
def test_an_index_that_exists_is_not_suggested_again(scratch_statements):
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE INDEX ON {SCHEMA}.orders (customer_id, created_at DESC, id)")
    assert ("customer_id", "created_at") not in by_columns(advisor.index_advice(limit=1000))


@pytest.mark.django_db
def test_a_suggestion_on_a_models_table_carries_its_add_index_concurrently_migration(with_pg_stat_statements, settings):
    settings.MONITORING_ADVISOR_MIN_CALLS = 5
    settings.MONITORING_MISSING_INDEX_MIN_ROWS = 0
    with connection.cursor() as cursor:
        for day in range(1, 6):
            cursor.execute("SELECT id FROM tasks_task WHERE completed_at >= %s", [f"2026-01-{day:02d}"])
    (suggestion,) = [
        s
        for s in advisor.index_advice(limit=1000)["suggestions"]
        if s["table"] == "tasks_task" and s["columns"] == ["completed_at"]
    ]
    assert suggestion["model"] == "tasks.Task"
    assert "AddIndexConcurrently(" in suggestion["migration"]
    assert "model_name='task'" in suggestion["migration"]
    assert "fields=['completed_at']" in suggestion["migration"]


@pytest.mark.django_db
def test_the_advisor_page_and_endpoint_show_the_suggestions(scratch_statements, viewer, login):
    page = login(viewer).get(reverse("admin:monitoring_advisor"))
    assert page.status_code == 200
    assert b"orders_customer_id_created_at_idx" in page.content
    response = login(viewer).get("/api/v1/database/performance/index-advisor")
    # IsAdminUser: the viewer is staff
    assert response.status_code == 200
    assert ["customer_id", "created_at"] in [s["columns"] for s in response.json()["suggestions"]]


@pytest.mark.django_db(transaction=True)
def test_a_seq_scanned_table_without_indexes_gets_a_concrete_suggestion_on_the_index_page(
    with_pg_stat_statements, settings, viewer, login
):
    """Defect 1's table (no index, sequentially scanned), big enough to be listed as missing an
    index: the page names the index its statement needs. Table statistics count committed work
    only, so this test commits, and drops its schema after."""
    settings.MONITORING_ADVISOR_MIN_CALLS = 5
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE SCHEMA {SCHEMA}")
            cursor.execute(f"CREATE TABLE {SCHEMA}.bare (x int, note text)")
            cursor.execute(f"INSERT INTO {SCHEMA}.bare SELECT g, 'n' FROM generate_series(1, 20000) AS g")
            cursor.execute(f"ANALYZE {SCHEMA}.bare")
            for i in range(5):
                cursor.execute(f"SELECT note FROM {SCHEMA}.bare WHERE x = %s", [i])
            cursor.execute("SELECT pg_stat_force_next_flush()")
        deadline = time.monotonic() + 10
        while not any(t["name"] == f"{SCHEMA}.bare" for t in indexes.index_usage()["missing_index_tables"]):
            assert time.monotonic() < deadline, "the seq scans never reached pg_stat_user_tables"
            time.sleep(0.1)
        page = login(viewer).get(reverse("admin:monitoring_indexes"))
        assert page.status_code == 200
        body = page.content.decode().replace("&quot;", '"')
        assert f'CREATE INDEX CONCURRENTLY "bare_x_idx" ON "{SCHEMA}"."bare" ("x")' in body
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


@pytest.mark.django_db(transaction=True)
def test_a_locked_table_does_not_hold_the_advisor_its_statements_show_why_they_were_not_planned(
    with_pg_stat_statements, settings
):
    """Planning needs a share lock on the table; behind an exclusive lock (or a queued ALTER
    TABLE) it gives up after PLAN_LOCK_TIMEOUT instead of waiting for the statement timeout."""
    import psycopg

    settings.MONITORING_ADVISOR_MIN_CALLS = 5
    settings.MONITORING_STATEMENT_TIMEOUT = "60s"
    try:
        with connection.cursor() as cursor:
            cursor.execute(SETUP)
            for _ in range(5):
                cursor.execute(EQUALITY[0], ["sku-1"])
        with psycopg.connect(**connection.get_connection_params()) as locker:
            locker.execute(f"LOCK TABLE {SCHEMA}.orders IN ACCESS EXCLUSIVE MODE")  # held until the block ends
            suggestion = by_columns(advisor.index_advice(limit=1000))[("sku",)]
        (statement,) = suggestion["statements"]
        assert statement["cost_now"] is None
        assert "lock timeout" in statement["plan_error"]
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


# --- verified with HypoPG (another server) ---------------------------------------------------------


@pytest.fixture
def hypopg_cursor():
    """A cursor in a transaction on a scratch database of a server that has HypoPG, with the
    scratch tables; the database is dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    dsn = os.environ.get("OPSDECK_HYPOPG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        admin = psycopg.connect(dsn, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at OPSDECK_HYPOPG_DSN ({exc})")
    name = f"opsdeck_advisor_{uuid.uuid4().hex[:12]}"
    with admin:
        if not admin.execute("SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'hypopg')").fetchone()[
            0
        ]:
            pytest.skip("the server at OPSDECK_HYPOPG_DSN has no hypopg (Debian: postgresql-NN-hypopg)")
        admin.execute(f"CREATE DATABASE {name}")
        try:
            with psycopg.connect(psycopg.conninfo.make_conninfo(dsn, dbname=name)) as scratch:
                scratch.execute("CREATE EXTENSION hypopg")
                scratch.execute(SETUP)
                scratch.commit()
                with scratch.cursor() as cursor:
                    yield cursor
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def verified_advice(cursor) -> dict:
    statements = [
        {"queryid": i, "query": normalized(sql), "calls": 5, "total_exec_ms": 1.0, "mean_exec_ms": 0.2}
        for i, (sql, _params, _columns) in enumerate(CASES.values(), start=1)
    ]
    return advisor.advise(cursor, statements)


def test_with_hypopg_each_suggestion_is_verified_with_its_cost_reduction(hypopg_cursor, settings):
    settings.MONITORING_ADVISOR_MIN_COST_REDUCTION = 0.5
    advice = verified_advice(hypopg_cursor)
    assert advice["hypopg"]
    suggestions = by_columns(advice)
    assert set(suggestions) == {tuple(case[2]) for case in CASES.values()}
    for kind, (_sql, _params, columns) in CASES.items():
        suggestion = suggestions[tuple(columns)]
        assert suggestion["status"] == "verified", kind
        (statement,) = suggestion["statements"]
        assert statement["uses_index"], kind
        assert statement["cost_with_index"] < statement["cost_now"] / 2, kind
        assert suggestion["cost_reduction"] == pytest.approx(1 - statement["cost_with_index"] / statement["cost_now"])
    # Hypothetical indexes are gone afterwards.
    hypopg_cursor.execute("SELECT count(*) FROM hypopg()")
    assert hypopg_cursor.fetchone()[0] == 0


def test_with_hypopg_a_candidate_the_planner_would_not_use_is_rejected(hypopg_cursor):
    # accounts has 50,000 rows and half of them share a kind: an index on it does not pay.
    hypopg_cursor.execute(f"ALTER TABLE {SCHEMA}.accounts ADD COLUMN kind int")
    hypopg_cursor.execute(f"UPDATE {SCHEMA}.accounts SET kind = id % 2")
    hypopg_cursor.execute(f"ANALYZE {SCHEMA}.accounts")
    statements = [
        {
            "queryid": 1,
            "query": f"SELECT * FROM {SCHEMA}.accounts WHERE kind = $1",
            "calls": 5,
            "total_exec_ms": 1.0,
            "mean_exec_ms": 0.2,
        }
    ]
    advice = advisor.advise(hypopg_cursor, statements)
    assert by_columns(advice, "accounts") == {}
    (rejected,) = [s for s in advice["rejected"] if s["table"] == "accounts"]
    assert rejected["columns"] == ["kind"] and rejected["status"] == "rejected"
