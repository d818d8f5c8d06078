"""One retention mechanism for the tables that grow forever (JobRun, outbox, refresh records,
monitoring history, finished executions, webhook deliveries...).

An app registers each table in its own `<app>/retention.py` (found by `autodiscover_modules`,
so this module names no domain app):

    register_retention(RetentionPolicy(
        model="project.JobRun", age_field="started_at", keep_days=30, mode=ARCHIVE,
        prunable="t.status NOT IN ('running', 'retrying')", kept="runs still running or retrying"))

The beat job `project.apply_retention` then moves, per table, rows older than `keep_days` that
match `prunable` in bounded batches: each batch is one statement in its own short transaction,

    WITH doomed AS (SELECT pk ... LIMIT batch FOR UPDATE SKIP LOCKED),
         gone AS (DELETE ... USING doomed RETURNING ...)
    INSERT INTO archive.<table> SELECT ... FROM gone          -- mode "archive"

so a row is either in its table or in its archive, never both and never neither, a row another
transaction holds is left for the next run (no waiting), and no batch holds locks for long.
Business records (`business=True`) are archived, never deleted: neither the registration nor a
setting can make them "delete". Settings per table: RETENTION_OVERRIDES (docs/operations.md).
"""

import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.apps import apps
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.utils import timezone
from prometheus_client import Counter
from psycopg import sql

from project.partitions import ARCHIVE_SCHEMA

logger = logging.getLogger("opsdeck.retention")

ARCHIVE = "archive"
DELETE = "delete"
MODES = (ARCHIVE, DELETE)
OVERRIDABLE = {"keep_days", "mode", "batch_size", "enabled"}
STATUS_CACHE_KEY = "opsdeck:retention:status"
JOB_NAME = "project.apply_retention"

rows_moved_total = Counter(
    "opsdeck_retention_rows_total", "Rows the retention job moved out of their table.", ["table", "action"]
)


@dataclass(frozen=True)
class RetentionPolicy:
    model: str  # "app_label.ModelName"
    age_field: str  # a row is old when this is before now - keep_days (NULL is never old)
    keep_days: int
    mode: str  # ARCHIVE (into archive.<table>) or DELETE
    kept: str  # for people: what this policy never removes
    # SQL a row must also meet to go, on alias `t` ({table} is the quoted table name): the
    # "what is kept" in code. Empty: every row past its age goes.
    prunable: str = ""
    business: bool = False  # a business record: archived, never deleted
    batch_size: int = 1000
    # A setting that holds keep_days (e.g. MONITORING_HISTORY_DAYS), read at every run.
    keep_days_setting: str = ""
    enabled: bool = True

    def __post_init__(self):
        _validate(self, source=f"retention policy of {self.model}")

    @property
    def label(self) -> str:
        return self.model


def _validate(policy: RetentionPolicy, *, source: str) -> None:
    if not isinstance(policy.enabled, bool):
        raise ImproperlyConfigured(f"{source}: enabled must be true or false, not {policy.enabled!r}")
    if policy.mode not in MODES:
        raise ImproperlyConfigured(f"{source}: mode must be one of {MODES}, not {policy.mode!r}")
    if policy.business and policy.mode != ARCHIVE:
        raise ImproperlyConfigured(f"{source}: {policy.model} holds business records: archived, never deleted")
    if not isinstance(policy.keep_days, int) or policy.keep_days < 1:
        raise ImproperlyConfigured(f"{source}: keep_days must be a whole number of days >= 1")
    if not isinstance(policy.batch_size, int) or not 1 <= policy.batch_size <= 10_000:
        raise ImproperlyConfigured(f"{source}: batch_size must be between 1 and 10000 (small batches, short locks)")


_policies: dict[str, RetentionPolicy] = {}


def register_retention(policy: RetentionPolicy) -> None:
    """Put a table under retention (idempotent for the same policy; a second, different one is a bug)."""
    existing = _policies.get(policy.model)
    if existing is not None and existing != policy:
        raise ImproperlyConfigured(f"{policy.model} registered twice for retention with different policies")
    _policies[policy.model] = policy


def registered_policies() -> list[RetentionPolicy]:
    return [_policies[label] for label in sorted(_policies)]


def effective_policy(policy: RetentionPolicy) -> RetentionPolicy:
    """The policy with its keep_days setting and RETENTION_OVERRIDES[model] applied."""
    if policy.keep_days_setting:
        policy = replace(policy, keep_days=getattr(settings, policy.keep_days_setting))
    override = settings.RETENTION_OVERRIDES.get(policy.model) or {}
    unknown = set(override) - OVERRIDABLE
    if unknown:
        raise ImproperlyConfigured(
            f"RETENTION_OVERRIDES[{policy.model!r}]: unknown keys {sorted(unknown)} (allowed: {sorted(OVERRIDABLE)})"
        )
    effective = replace(policy, **override) if override else policy
    _validate(effective, source=f"RETENTION_OVERRIDES[{policy.model!r}]")
    return effective


def effective_policies() -> list[RetentionPolicy]:
    unknown = set(settings.RETENTION_OVERRIDES) - set(_policies)
    if unknown:
        raise ImproperlyConfigured(f"RETENTION_OVERRIDES names tables nobody registered: {sorted(unknown)}")
    return [effective_policy(policy) for policy in registered_policies()]


# --- the batches ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    name: str
    pk: list[str]
    columns: list[str]
    age: str


def _table(policy: RetentionPolicy) -> _Table:
    model = apps.get_model(policy.model)
    meta = model._meta
    columns = [field.column for field in meta.concrete_fields if field.column]
    return _Table(
        name=meta.db_table,
        pk=[field.column for field in meta.pk_fields],
        columns=columns,
        age=meta.get_field(policy.age_field).column,
    )


def _identifiers(names: list[str], prefix: str = "") -> sql.Composable:
    if prefix:
        return sql.SQL(", ").join(sql.Identifier(prefix, name) for name in names)
    return sql.SQL(", ").join(sql.Identifier(name) for name in names)


def _prunable_sql(policy: RetentionPolicy, table: _Table) -> sql.Composable:
    if not policy.prunable:
        return sql.SQL("TRUE")
    # The condition is code (a registration), never input: {table} is the only substitution.
    return sql.SQL(policy.prunable).format(table=sql.Identifier(table.name))


def ensure_archive_table(table: _Table) -> None:
    """archive.<table>: the table's columns (no NOT NULL but the key's), plus archived_at.

    Created on first use; columns the table gained since are added (nullable), so a migration of
    the live table never breaks archiving."""
    archive = sql.Identifier(ARCHIVE_SCHEMA, table.name)
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(ARCHIVE_SCHEMA)))
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [f'"{ARCHIVE_SCHEMA}"."{table.name}"'])
        if not cursor.fetchone()[0]:
            cursor.execute(
                sql.SQL(
                    "CREATE TABLE {archive} AS SELECT * FROM {live} WITH NO DATA;"
                    " ALTER TABLE {archive} ADD COLUMN archived_at timestamptz NOT NULL DEFAULT now(),"
                    " ADD PRIMARY KEY ({pk})"
                ).format(archive=archive, live=sql.Identifier(table.name), pk=_identifiers(table.pk))
            )
            return
        cursor.execute(
            """
            SELECT a.attname, format_type(a.atttypid, a.atttypmod)
            FROM pg_attribute a
            WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
              AND a.attname NOT IN (SELECT attname FROM pg_attribute
                                    WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped)
            """,
            [f'"{table.name}"', f'"{ARCHIVE_SCHEMA}"."{table.name}"'],
        )
        for column, column_type in cursor.fetchall():
            cursor.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                    archive, sql.Identifier(column), sql.SQL(column_type)
                )
            )


def _batch_statement(policy: RetentionPolicy, table: _Table) -> sql.Composable:
    live = sql.Identifier(table.name)
    join = sql.SQL(" AND ").join(
        sql.SQL("d.{col} = doomed.{col}").format(col=sql.Identifier(column)) for column in table.pk
    )
    selection = sql.SQL(
        "WITH doomed AS ("
        " SELECT {pk} FROM {live} t WHERE t.{age} < %(cutoff)s AND ({prunable})"
        " LIMIT %(batch_size)s FOR UPDATE OF t SKIP LOCKED),"
        " gone AS (DELETE FROM {live} d USING doomed WHERE {join} RETURNING {returned}) "
    ).format(
        pk=_identifiers(table.pk, "t"),
        live=live,
        age=sql.Identifier(table.age),
        prunable=_prunable_sql(policy, table),
        join=join,
        returned=_identifiers(table.columns, "d"),
    )
    if policy.mode == DELETE:
        return selection + sql.SQL("SELECT count(*) FROM gone")
    return selection + sql.SQL("INSERT INTO {archive} ({columns}) SELECT {columns} FROM gone").format(
        archive=sql.Identifier(ARCHIVE_SCHEMA, table.name), columns=_identifiers(table.columns)
    )


def move_one_batch(policy: RetentionPolicy, table: _Table, cutoff: datetime) -> int:
    """One short transaction: at most batch_size rows out of the table. Returns how many."""
    statement = _batch_statement(policy, table)
    with transaction.atomic(), connection.cursor() as cursor:
        # Only DDL on the table could make it wait (rows others lock are skipped): then give up
        # this run rather than queue everyone else behind it.
        cursor.execute(
            "SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
            [settings.RETENTION_LOCK_TIMEOUT, settings.RETENTION_STATEMENT_TIMEOUT],
        )
        cursor.execute(statement, {"cutoff": cutoff, "batch_size": policy.batch_size})
        if policy.mode == DELETE:
            return cursor.fetchone()[0]
        return cursor.rowcount


def oldest_prunable_at(policy: RetentionPolicy, table: _Table) -> datetime | None:
    """When the oldest row this policy will remove one day was written (None: there is none).

    Its age against keep_days says whether retention keeps up (RetentionBehind)."""
    query = sql.SQL("SELECT min(t.{age}) FROM {live} t WHERE ({prunable})").format(
        age=sql.Identifier(table.age), live=sql.Identifier(table.name), prunable=_prunable_sql(policy, table)
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('statement_timeout', %s, true)", [settings.RETENTION_STATEMENT_TIMEOUT])
        cursor.execute(query)
        return cursor.fetchone()[0]


def apply_policy(policy: RetentionPolicy, *, now: datetime, max_batches: int, deadline: float) -> dict:
    """Run one table's batches until a short batch (done), max_batches or the deadline."""
    table = _table(policy)
    cutoff = now - timedelta(days=policy.keep_days)
    if policy.mode == ARCHIVE:
        ensure_archive_table(table)
    moved, batches = 0, 0
    while batches < max_batches and time.monotonic() < deadline:
        count = move_one_batch(policy, table, cutoff)
        batches += 1
        moved += count
        if count < policy.batch_size:
            break
    action = "archived" if policy.mode == ARCHIVE else "deleted"
    if moved:
        rows_moved_total.labels(table=table.name, action=action).inc(moved)
    oldest = oldest_prunable_at(policy, table)
    return {
        "model": policy.model,
        "table": table.name,
        "mode": policy.mode,
        "action": action,
        "keep_days": policy.keep_days,
        "batch_size": policy.batch_size,
        "rows": moved,
        "batches": batches,
        "oldest_prunable_at": oldest.isoformat() if oldest else None,
        "run_at": now.isoformat(),
        "error": "",
    }


def apply_retention(*, now: datetime | None = None, max_batches: int | None = None, budget_s: float | None = None):
    """Apply every registered policy (a failing table is recorded and the others still run)."""
    now = now or timezone.now()
    max_batches = max_batches or settings.RETENTION_MAX_BATCHES
    deadline = time.monotonic() + (budget_s or settings.RETENTION_BUDGET_S)
    tables = {}
    for policy in effective_policies():
        if not policy.enabled:
            continue
        try:
            tables[policy.model] = apply_policy(policy, now=now, max_batches=max_batches, deadline=deadline)
        except Exception as exc:  # one table's trouble (a lock timeout) must not stop the rest
            logger.exception("retention failed for a table", extra={"model": policy.model})
            tables[policy.model] = {"model": policy.model, "error": str(exc).splitlines()[0][:300]}
    status = {"run_at": now.isoformat(), "tables": tables}
    cache.set(STATUS_CACHE_KEY, status, timeout=None)
    return status


# --- what the cockpit and /metrics show ----------------------------------------------------------


def last_status(*, read_database: bool = True) -> dict:
    """The last run's outcome: from the cache, else from the newest JobRun of the job."""
    status = cache.get(STATUS_CACHE_KEY)
    if status is None and not read_database:
        return {}
    if status is None:
        from project.models import JobRun

        run = (
            JobRun.objects.filter(name=JOB_NAME, status=JobRun.Status.SUCCEEDED)
            .order_by("-started_at")
            .only("result")
            .first()
        )
        status = run.result if run is not None and "tables" in (run.result or {}) else {}
    return status


def retention_overview(*, now: datetime | None = None, read_database: bool = True) -> dict:
    """Every registered table: its settings, what it keeps, and how the last run went."""
    now = now or timezone.now()
    status = last_status(read_database=read_database)
    last_tables = status.get("tables", {})
    rows = []
    for registered in registered_policies():
        try:
            policy, settings_error = effective_policy(registered), ""
        except ImproperlyConfigured as exc:
            policy, settings_error = registered, str(exc)
        last = last_tables.get(policy.model, {})
        oldest = last.get("oldest_prunable_at")
        oldest_age_s = (now - datetime.fromisoformat(oldest)).total_seconds() if oldest else None
        keep_s = policy.keep_days * 86400
        rows.append(
            {
                "model": policy.model,
                "table": apps.get_model(policy.model)._meta.db_table,
                "mode": policy.mode,
                "business": policy.business,
                "enabled": policy.enabled,
                "keep_days": policy.keep_days,
                "batch_size": policy.batch_size,
                "age_field": policy.age_field,
                "kept": policy.kept,
                "last_rows": last.get("rows"),
                "last_batches": last.get("batches"),
                "oldest_prunable_age_s": oldest_age_s,
                "behind": oldest_age_s is not None and oldest_age_s > keep_s + settings.RETENTION_BEHIND_SLACK_S,
                "error": settings_error or last.get("error", ""),
            }
        )
    return {"last_run_at": status.get("run_at"), "tables": rows}


class RetentionCollector:
    """Scrape-time figures of the last run (the job runs in a worker; web's /metrics reads the
    cache): the oldest prunable row's age keeps growing between runs, so a retention job that
    stopped running shows as RetentionBehind too."""

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        # A scrape runs no query (tests/monitoring/test_metrics.py): the cache only; after a cache
        # flush the figures are back with the next run.
        overview = retention_overview(read_database=False)
        age = GaugeMetricFamily(
            "opsdeck_retention_oldest_row_age_seconds",
            "Age of the oldest row retention will remove (0: none waiting), as of now.",
            labels=["table"],
        )
        keep = GaugeMetricFamily("opsdeck_retention_keep_seconds", "How long each table keeps rows.", labels=["table"])
        last_rows = GaugeMetricFamily(
            "opsdeck_retention_last_run_rows",
            "Rows the last retention run moved, per table.",
            labels=["table", "action"],
        )
        for row in overview["tables"]:
            if not row["enabled"]:
                continue
            keep.add_metric([row["table"]], row["keep_days"] * 86400)
            if overview["last_run_at"] is None or row["last_rows"] is None:
                continue
            age.add_metric([row["table"]], row["oldest_prunable_age_s"] or 0)
            last_rows.add_metric([row["table"], "archived" if row["mode"] == ARCHIVE else "deleted"], row["last_rows"])
        yield from (age, keep, last_rows)
        if overview["last_run_at"]:
            yield GaugeMetricFamily(
                "opsdeck_retention_last_run_timestamp_seconds",
                "When the retention job last ran (Unix time).",
                value=datetime.fromisoformat(overview["last_run_at"]).timestamp(),
            )


# --- the platform's own tables ------------------------------------------------------------------

register_retention(
    RetentionPolicy(
        model="project.JobRun",
        age_field="started_at",  # jobrun_started_idx
        keep_days=30,  # seed 004: "archive completed jobs older than 30 days"
        mode=ARCHIVE,
        prunable="t.status NOT IN ('running', 'retrying')",
        kept="runs still running or retrying, and every run of the last 30 days",
    )
)
register_retention(
    RetentionPolicy(
        model="project.MaterializedViewRefresh",
        age_field="started_at",
        keep_days=30,
        mode=DELETE,
        # A view's staleness is read from its newest successful refresh: that row always stays.
        prunable=(
            "EXISTS (SELECT 1 FROM {table} n WHERE n.view_name = t.view_name"
            " AND n.started_at > t.started_at AND n.status = 'ok')"
        ),
        kept="each view's newest successful refresh (and what came after it), and 30 days of refreshes",
    )
)
register_retention(
    RetentionPolicy(
        model="project.OutboxMessage",
        age_field="dispatched_at",  # outbox_dispatched_idx; NULL (not yet published) is never old
        keep_days=7,
        keep_days_setting="OUTBOX_KEEP_DAYS",
        mode=DELETE,
        kept="messages not yet published, and published ones for OUTBOX_KEEP_DAYS",
    )
)
