"""What the cockpit's maintenance actions do, run by the `monitoring.maintenance_*` jobs.

Each takes catalog keys (an index or table oid, a backend pid, a registered view name, a
pg_stat_statements queryid), looks the object up in the catalog again, quotes identifiers with
psycopg.sql, runs with lock_timeout and statement_timeout, and records the outcome in ActivityLog
against the superuser who asked. Nothing from request text reaches SQL except as a bound value.
"""

import json
import re
from contextlib import contextmanager

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from psycopg import sql

from monitoring.explain_guard import UnsafeStatement, check_read_only_functions
from project.activity import activity_record
from project.models import ActivityLog

CATEGORY = "monitoring"


class ActionRefused(Exception):
    """The object is gone or not eligible any more (the page was older than the catalog)."""


def _user(user_id: int | None):
    return get_user_model()(pk=user_id) if user_id else None


def audit(action: str, *, user_id: int | None, entity_type: str, entity_id, metadata: dict, level=None) -> None:
    activity_record(
        category=CATEGORY,
        action=action,
        user=_user(user_id),
        entity_type=entity_type,
        entity_id=entity_id,
        metadata=metadata,
        level=level or ActivityLog.Level.INFO,
    )


def _render(statement: sql.Composable) -> str:
    connection.ensure_connection()
    return statement.as_string(connection.connection)


@contextmanager
def session_timeouts(statement_timeout: str | None = None):
    """lock_timeout and statement_timeout for statements that cannot run in a transaction block
    (REINDEX CONCURRENTLY, VACUUM): set on the session, always reset (pooled connection).

    Refused behind PgBouncer in transaction mode: the SETs, the statement and the RESETs would each
    run on whichever server connection is free, so the statement would run without its timeouts
    and leave them on another client's connection. The maintenance worker connects directly."""
    if settings.DB_BEHIND_PGBOUNCER:
        raise ActionRefused(
            "maintenance actions need a direct PostgreSQL connection (session timeouts): "
            "run the worker consuming `maintenance` without PgBouncer (docs/operations.md)"
        )
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('lock_timeout', %s, false)", [settings.MONITORING_ACTION_LOCK_TIMEOUT])
        cursor.execute(
            "SELECT set_config('statement_timeout', %s, false)",
            [statement_timeout or settings.MONITORING_ACTION_STATEMENT_TIMEOUT],
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
            cursor.execute("RESET statement_timeout")


def _one(query: str, params: list) -> dict | None:
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        row = cursor.fetchone()
        if row is None:
            return None
        return dict(zip([column.name for column in cursor.description], row, strict=True))


def _all(query: str, params: list) -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        columns = [column.name for column in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def index_by_oid(oid: int) -> dict | None:
    return _one(
        """
        SELECT n.nspname AS schema, c.relname AS name, i.indisvalid AS is_valid, c.relkind,
               t.relname AS "table", EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = c.oid) AS backs_constraint
        FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid JOIN pg_class t ON t.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = %s AND c.relkind IN ('i', 'I')
        """,
        [oid],
    )


def table_by_oid(oid: int) -> dict | None:
    return _one(
        """
        SELECT n.nspname AS schema, c.relname AS name, c.relkind
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = %s AND c.relkind IN ('r', 'p', 'm')
        """,
        [oid],
    )


def _run(statement: sql.Composable, *, statement_timeout: str | None = None) -> None:
    text = _render(statement)
    with session_timeouts(statement_timeout), connection.cursor() as cursor:
        cursor.execute(text)


def _with_audit(action: str, entity_type: str, entity_id, user_id, metadata: dict, work) -> dict:
    try:
        result = work() or {}
    except Exception as exc:
        audit(
            action,
            user_id=user_id,
            entity_type=entity_type,
            entity_id=entity_id,
            metadata={**metadata, "outcome": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]},
            level=ActivityLog.Level.ERROR,
        )
        raise
    audit(
        action,
        user_id=user_id,
        entity_type=entity_type,
        entity_id=entity_id,
        metadata={**metadata, **result, "outcome": "done"},
    )
    return {**metadata, **result}


def reindex(*, oid: int, requested_by: int | None = None) -> dict:
    """REINDEX INDEX CONCURRENTLY (a partitioned index: each partition's, one after the other)."""
    index = index_by_oid(oid)
    if index is None:
        raise ActionRefused(f"index {oid} no longer exists")
    name = sql.Identifier(index["schema"], index["name"])
    return _with_audit(
        "reindex",
        "index",
        f"{index['schema']}.{index['name']}",
        requested_by,
        {"index": index["name"]},
        lambda: _run(sql.SQL("REINDEX INDEX CONCURRENTLY {}").format(name)),
    )


def drop_invalid_index(*, oid: int, requested_by: int | None = None) -> dict:
    """DROP INDEX CONCURRENTLY of an index left invalid by a failed concurrent build."""
    index = index_by_oid(oid)
    if index is None:
        raise ActionRefused(f"index {oid} no longer exists")
    if index["is_valid"] or index["backs_constraint"]:
        raise ActionRefused(f"{index['name']} is valid or backs a constraint: only invalid indexes are dropped here")
    name = sql.Identifier(index["schema"], index["name"])
    return _with_audit(
        "drop_invalid_index",
        "index",
        f"{index['schema']}.{index['name']}",
        requested_by,
        {"index": index["name"]},
        lambda: _run(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(name)),
    )


def _signal_backend(function: str, pid: int, requested_by: int | None) -> dict:
    row = _one(
        "SELECT pid, usename, application_name, state, left(query, 500) AS query FROM pg_stat_activity WHERE pid = %s",
        [pid],
    )
    if row is None:
        raise ActionRefused(f"backend {pid} is gone")
    if pid == _one("SELECT pg_backend_pid() AS pid", [])["pid"]:
        raise ActionRefused("refusing to signal the job's own connection")

    def work():
        signalled = _one(f"SELECT {function}(%s) AS ok", [pid])["ok"]  # function: one of two literals
        return {"signalled": bool(signalled)}

    action = "cancel_backend" if function == "pg_cancel_backend" else "terminate_backend"
    return _with_audit(
        action,
        "backend",
        pid,
        requested_by,
        {"pid": pid, "application_name": row["application_name"], "query": row["query"]},
        work,
    )


def cancel_backend(*, pid: int, requested_by: int | None = None) -> dict:
    return _signal_backend("pg_cancel_backend", pid, requested_by)


def terminate_backend(*, pid: int, requested_by: int | None = None) -> dict:
    return _signal_backend("pg_terminate_backend", pid, requested_by)


def vacuum(*, oid: int, freeze: bool = False, requested_by: int | None = None) -> dict:
    """VACUUM (ANALYZE) of one table (a partitioned table: all its partitions); with freeze,
    VACUUM (FREEZE, ANALYZE), which the wraparound finding asks for: every row's transaction id
    is frozen now, so the table's age drops to zero."""
    table = table_by_oid(oid)
    if table is None:
        raise ActionRefused(f"table {oid} no longer exists")
    name = sql.Identifier(table["schema"], table["name"])
    options = "FREEZE, ANALYZE" if freeze else "ANALYZE"
    return _with_audit(
        "vacuum_freeze" if freeze else "vacuum_analyze",
        "table",
        f"{table['schema']}.{table['name']}",
        requested_by,
        {"table": f"{table['schema']}.{table['name']}"},
        lambda: _run(sql.SQL(f"VACUUM ({options}) {{}}").format(name)),
    )


def vacuum_freeze(*, oid: int, requested_by: int | None = None) -> dict:
    return vacuum(oid=oid, freeze=True, requested_by=requested_by)


def _registered_partitioned_table(oid: int) -> dict:
    from project.partitions import registered_partitioned_models

    table = table_by_oid(oid)
    registered = {model._meta.db_table for model in registered_partitioned_models()}
    if table is None or table["name"] not in registered or table["schema"] != "public":
        raise ActionRefused("only tables registered with project.partitions get partitions created here")
    return table


def create_partitions_plan(*, oid: int) -> dict:
    """What "create missing partitions" would do now, for the confirmation page."""
    from datetime import UTC, datetime

    from project.partitions import ARCHIVE_SCHEMA, plan_monthly_partitions

    table = _registered_partitioned_table(oid)
    plan = plan_monthly_partitions(
        table["name"],
        today=datetime.now(UTC).date(),
        months_back=settings.PARTITION_MONTHS_BACK,
        months_ahead=settings.PARTITION_MONTHS_AHEAD,
    )
    return {
        "table": f"{table['schema']}.{table['name']}",
        "will_create": [f"{name} ({start:%Y-%m-%d} to {end:%Y-%m-%d})" for name, start, end in plan.create]
        or ["nothing: every month is there"],
        "will_detach_and_archive": [f"{name} → {ARCHIVE_SCHEMA}.{name}" for name in plan.archive]
        or ["nothing: no partition is older than PARTITION_MONTHS_BACK"],
    }


def create_partitions(*, oid: int, requested_by: int | None = None) -> dict:
    """Create the missing monthly partitions of a table registered with project.partitions."""
    from datetime import UTC, datetime

    from project.partitions import maintain_monthly_partitions

    table = _registered_partitioned_table(oid)

    def work():
        with session_timeouts():
            report = maintain_monthly_partitions(
                table["name"],
                today=datetime.now(UTC).date(),
                months_back=settings.PARTITION_MONTHS_BACK,
                months_ahead=settings.PARTITION_MONTHS_AHEAD,
            )
        return {"created": report.created, "archived": report.archived}

    return _with_audit("create_partitions", "table", table["name"], requested_by, {"table": table["name"]}, work)


def refresh_view(*, name: str, requested_by: int | None = None) -> dict:
    """REFRESH MATERIALIZED VIEW CONCURRENTLY through project.matviews (registered views only)."""
    from project.matviews import get_materialized_view, refresh_materialized_view

    get_materialized_view(name)  # raises for a view nobody registered

    def work():
        refresh = refresh_materialized_view(name)
        return {"status": refresh.status, "duration_ms": refresh.duration_ms, "error": refresh.error[:500]}

    return _with_audit("refresh_view", "materialized_view", name, requested_by, {"view": name}, work)


def reset_statements(*, requested_by: int | None = None) -> dict:
    """pg_stat_statements_reset() for this database only (other databases on the server are not
    Opsdeck's): lifetime totals start again; the snapshots keep the history."""

    def work():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_stat_statements_reset(0, d.oid, 0) FROM pg_database d WHERE d.datname = current_database()"
            )
        return {}

    return _with_audit("reset_statements", "pg_stat_statements", "", requested_by, {}, work)


_PARAMETER = re.compile(r"\$(\d+)")


def top_level_text(queryid: int) -> str:
    """The statement's text as the application sent it: its top-level row, the busiest one.

    With pg_stat_statements.track = all, statements run inside another one are recorded too,
    under the same queryid with toplevel = false, and their text is the outer statement's: the
    cockpit's own EXPLAIN of the statement is one. Reading any row would EXPLAIN an EXPLAIN.
    """
    rows = _all(
        "SELECT query, toplevel FROM pg_stat_statements WHERE queryid = %s "
        "AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "ORDER BY toplevel DESC, calls DESC, userid",
        [queryid],
    )
    if not rows:
        raise ActionRefused(f"statement {queryid} is not in pg_stat_statements")
    if not rows[0]["toplevel"]:
        raise ActionRefused(
            f"statement {queryid} only ran nested inside other statements (functions, EXPLAIN): "
            "its recorded text is theirs, so there is nothing to EXPLAIN on its own"
        )
    return rows[0]["query"]


_READ_QUERY = re.compile(r"^\s*(/\*.*?\*/\s*)*(select|with|values|table)\b", re.IGNORECASE | re.DOTALL)


def explain(
    *, queryid: int, analyze: bool = False, parameters: list[str] | None = None, requested_by: int | None = None
) -> dict:
    """EXPLAIN a statement of pg_stat_statements (by queryid, never text from the request).

    Without ANALYZE, a statement with $n placeholders is planned generically (GENERIC_PLAN,
    PostgreSQL 16+). EXPLAIN ANALYZE runs only read queries, with the superuser's parameter
    values bound as literals, in a READ ONLY transaction that is rolled back.
    """
    query = top_level_text(queryid)
    placeholders = sorted({int(n) for n in _PARAMETER.findall(query)})
    parameters = parameters or []
    if analyze and not _READ_QUERY.match(query):
        raise ActionRefused("EXPLAIN ANALYZE runs read queries only (SELECT / WITH)")
    if analyze:
        try:
            check_read_only_functions(query)
        except UnsafeStatement as exc:
            raise ActionRefused(str(exc)) from None
    if analyze and len(parameters) != len(placeholders):
        raise ActionRefused(f"the statement has {len(placeholders)} parameters; {len(parameters)} values given")

    prepared = f"opsdeck_explain_{queryid & 0xFFFFFFFF}"

    def work():
        try:
            return {"plan": _explain_in_rolled_back_transaction()}
        finally:
            # Prepared statements are per session and outlive the rollback; the connection is pooled.
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_prepared_statements WHERE name = %s", [prepared])
                if cursor.fetchone():
                    cursor.execute(_render(sql.SQL("DEALLOCATE {}").format(sql.Identifier(prepared))))

    def _explain_in_rolled_back_transaction():
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION READ ONLY")
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [settings.MONITORING_STATEMENT_TIMEOUT])
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [settings.MONITORING_ACTION_LOCK_TIMEOUT])
            if analyze and placeholders:
                statement_name = sql.Identifier(prepared)
                cursor.execute(_render(sql.SQL("PREPARE {} AS ").format(statement_name) + sql.SQL(query)))
                cursor.execute(
                    _render(
                        sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE {}({})").format(
                            statement_name, sql.SQL(", ").join(sql.Literal(value) for value in parameters)
                        )
                    )
                )
            elif analyze:
                cursor.execute(_render(sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ") + sql.SQL(query)))
            else:
                options = "FORMAT JSON, GENERIC_PLAN" if placeholders else "FORMAT JSON"
                cursor.execute(_render(sql.SQL(f"EXPLAIN ({options}) ") + sql.SQL(query)))
            plan = cursor.fetchone()[0]
            transaction.set_rollback(True)  # nothing the statement did survives
        return json.loads(plan) if isinstance(plan, str) else plan

    result = _with_audit(
        "explain_analyze" if analyze else "explain",
        "statement",
        queryid,
        requested_by,
        {"queryid": queryid, "analyze": analyze},
        work,
    )
    return result
