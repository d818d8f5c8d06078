"""Reads of the reconciliation analytics views (created in migration 0002_materialized_views).

Every selector is tenant-scoped (`tenant_ids`: the tenants the caller may see; an empty list
sees nothing), runs one query, and says how fresh its figures are: the view's last successful
recorded refresh (project.matviews writes one MaterializedViewRefresh row per refresh) is read
in the same statement, so the rows and the refresh time come from one snapshot. Reads go to the
read replica when one is configured: these are dashboards that tolerate a replica's lag, and the
refresh record replicates with the view.

What each figure means, and the windows the views cover: docs/reconciliation-analytics.md.
"""

import datetime
import json
from dataclasses import dataclass

from django.db import connections
from django.utils import timezone

from project.db.routers import replica_alias
from project.matviews import STALE_AFTER_PERIODS, get_materialized_view, register_materialized_view
from project.models import MaterializedViewRefresh
from reconciliation.models import ReconciliationJob

SUMMARY_DAILY = "mv_reconciliation_summary_daily"
JOB_PERFORMANCE = "mv_job_performance"
TENANT_USAGE_HOURLY = "mv_tenant_usage_hourly"
MATCH_ACCURACY = "mv_match_accuracy_by_job"

# Days of history each view aggregates (the bounds are in the migration's SQL): whole UTC days,
# today included.
WINDOW_DAYS = 90
TENANT_USAGE_WINDOW_DAYS = 30


@dataclass(frozen=True)
class AnalyticsView:
    name: str
    refresh_every_s: int
    window_days: int
    description: str


ANALYTICS_VIEWS = (
    AnalyticsView(
        SUMMARY_DAILY,
        3600,
        WINDOW_DAYS,
        "Per tenant, job and UTC day of the last 90 days: executions, matches, exceptions, match rate, amounts.",
    ),
    AnalyticsView(
        JOB_PERFORMANCE,
        3600,
        WINDOW_DAYS,
        "Per job, over the last 90 days: executions, success rate, avg/p95 duration, last run, avg match rate.",
    ),
    AnalyticsView(
        TENANT_USAGE_HOURLY,
        900,
        TENANT_USAGE_WINDOW_DAYS,
        "Per tenant and UTC hour of the last 30 days: records ingested, executions, matches created.",
    ),
    AnalyticsView(
        MATCH_ACCURACY,
        86400,
        WINDOW_DAYS,
        "Per job, matches of the last 90 days: reviewed, confirmed, rejected, accuracy, per pass.",
    ),
)


_WINDOW_DAYS = {view.name: view.window_days for view in ANALYTICS_VIEWS}


def register_analytics_views() -> None:
    """Called from ReconciliationConfig.ready(): the views' refreshes and staleness are watched."""
    for view in ANALYTICS_VIEWS:
        register_materialized_view(view.name, refresh_every_s=view.refresh_every_s, description=view.description)


# The last successful refresh of one view: the index (view_name, -started_at) read backwards,
# the same "last ok" as project.matviews.materialized_view_status().
_LAST_REFRESH = f"""
    SELECT finished_at FROM {MaterializedViewRefresh._meta.db_table}
    WHERE view_name = %(view)s AND status = '{MaterializedViewRefresh.Status.OK}'
    ORDER BY started_at DESC, id DESC LIMIT 1
"""

_JOB_TABLE = ReconciliationJob._meta.db_table


def _read(view_name: str, columns: list[str], rows_sql: str, params: dict, *, order_by: list[str]) -> dict:
    """One statement: the refresh time LEFT JOIN the rows, so an empty result still says it."""
    view = get_materialized_view(view_name)
    window_days = _WINDOW_DAYS[view.name]
    select = ", ".join(f"v.{column}" for column in columns)
    statement = f"""
        SELECT refreshed.at, {select}
        FROM (SELECT ({_LAST_REFRESH}) AS at) AS refreshed
        LEFT JOIN LATERAL ({rows_sql}) AS v ON true
        ORDER BY {", ".join(f"v.{column}" for column in order_by)}
    """
    with connections[replica_alias()].cursor() as cursor:
        cursor.execute(statement, {**params, "view": view.name})
        fetched = cursor.fetchall()
    refreshed_at = fetched[0][0]
    rows = [dict(zip(columns, row[1:], strict=True)) for row in fetched if row[1] is not None]
    staleness_s = (timezone.now() - refreshed_at).total_seconds() if refreshed_at else None
    return {
        "view": view.name,
        "refreshed_at": refreshed_at,
        "refresh_every_s": view.refresh_every_s,
        "window_days": window_days,
        # As project.matviews says it: never refreshed through the recorder, or too long ago.
        "stale": staleness_s is None or staleness_s > STALE_AFTER_PERIODS * view.refresh_every_s,
        "rows": rows,
    }


def _tenant_list(tenant_ids) -> list[int]:
    return sorted({int(tenant_id) for tenant_id in tenant_ids})


def daily_summary(*, tenant_ids, job_id: int | None = None, since: datetime.date | None = None) -> dict:
    """Per job and UTC day, oldest day first.

    Every selector returns {view, refreshed_at, refresh_every_s, window_days, stale, rows}.

    Rows: tenant_id, job_id, job_name, day, executions, succeeded, failed, matches,
    matched_records, exceptions, open_records, match_rate (None: nothing settled that day),
    amount_matched_left, amount_matched_right, amount_open.
    """
    columns = [
        "tenant_id", "job_id", "job_name", "day", "executions", "succeeded", "failed", "matches",
        "matched_records", "exceptions", "open_records", "match_rate",
        "amount_matched_left", "amount_matched_right", "amount_open",
    ]  # fmt: skip
    rows_sql = f"""
        SELECT s.*, j.name AS job_name
        FROM {SUMMARY_DAILY} AS s
        JOIN {_JOB_TABLE} AS j ON j.id = s.job_id AND j.tenant_id = s.tenant_id
        WHERE s.tenant_id = ANY(%(tenant_ids)s)
          AND (%(job_id)s::bigint IS NULL OR s.job_id = %(job_id)s::bigint)
          AND (%(since)s::date IS NULL OR s.day >= %(since)s::date)
    """
    params = {"tenant_ids": _tenant_list(tenant_ids), "job_id": job_id, "since": since}
    return _read(SUMMARY_DAILY, columns, rows_sql, params, order_by=["day", "tenant_id", "job_id"])


def job_performance(*, tenant_ids) -> dict:
    """Per job (every job of the tenants, run or not), by job id.

    Rows: tenant_id, job_id, job_name, is_active, executions, succeeded, failed, cancelled,
    success_rate, avg_duration_s, p95_duration_s, last_run_at, last_status, avg_match_rate,
    last_match_rate (match rates: the share of the job's records matched when a run finished, as
    its summary reports it).
    """
    columns = [
        "tenant_id", "job_id", "job_name", "is_active", "executions", "succeeded", "failed", "cancelled",
        "success_rate", "avg_duration_s", "p95_duration_s", "last_run_at", "last_status", "avg_match_rate",
        "last_match_rate",
    ]  # fmt: skip
    rows_sql = f"""
        SELECT p.*, j.name AS job_name, j.is_active
        FROM {JOB_PERFORMANCE} AS p
        JOIN {_JOB_TABLE} AS j ON j.id = p.job_id AND j.tenant_id = p.tenant_id
        WHERE p.tenant_id = ANY(%(tenant_ids)s)
    """
    params = {"tenant_ids": _tenant_list(tenant_ids)}
    return _read(JOB_PERFORMANCE, columns, rows_sql, params, order_by=["tenant_id", "job_id"])


def tenant_usage_hourly(*, tenant_ids, since: datetime.datetime) -> dict:
    """Per tenant and UTC hour from the hour containing `since`, oldest first.

    Rows: tenant_id, hour (start of the hour, UTC), records_ingested, executions, matches_created.
    Hours with no activity have no row.
    """
    if timezone.is_naive(since):
        since = timezone.make_aware(since, datetime.UTC)
    since_hour = since.astimezone(datetime.UTC).replace(minute=0, second=0, microsecond=0)
    columns = ["tenant_id", "hour", "records_ingested", "executions", "matches_created"]
    rows_sql = f"""
        SELECT u.*
        FROM {TENANT_USAGE_HOURLY} AS u
        WHERE u.tenant_id = ANY(%(tenant_ids)s) AND u.hour >= %(since)s
    """
    params = {"tenant_ids": _tenant_list(tenant_ids), "since": since_hour}
    return _read(TENANT_USAGE_HOURLY, columns, rows_sql, params, order_by=["hour", "tenant_id"])


def match_accuracy(*, tenant_ids) -> dict:
    """Per job with matcher-made matches in the last 90 days, by job id.

    Rows: tenant_id, job_id, job_name, matches, auto, suggested, confirmed, rejected, reviewed,
    accuracy (confirmed / reviewed; None when nothing was reviewed), by_pass ({pass_name: the same
    counts, accuracy, avg_confidence_confirmed, avg_confidence_rejected; JSON numbers, so floats}).
    """
    columns = [
        "tenant_id", "job_id", "job_name", "matches", "auto", "suggested", "confirmed", "rejected",
        "reviewed", "accuracy", "by_pass",
    ]  # fmt: skip
    rows_sql = f"""
        SELECT a.*, j.name AS job_name
        FROM {MATCH_ACCURACY} AS a
        JOIN {_JOB_TABLE} AS j ON j.id = a.job_id AND j.tenant_id = a.tenant_id
        WHERE a.tenant_id = ANY(%(tenant_ids)s)
    """
    params = {"tenant_ids": _tenant_list(tenant_ids)}
    result = _read(MATCH_ACCURACY, columns, rows_sql, params, order_by=["tenant_id", "job_id"])
    for row in result["rows"]:
        # Django's psycopg setup hands jsonb over as text (JSONField decodes it; raw SQL must).
        row["by_pass"] = json.loads(row["by_pass"]) if isinstance(row["by_pass"], str) else row["by_pass"]
    return result
