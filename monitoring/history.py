"""History that survives restarts: minute samples of the key figures, 5-minute snapshots of
pg_stat_statements and index-usage counters, and the chart series read back from them."""

from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone

from monitoring.figures import collect_figures
from monitoring.models import IndexUsageSnapshot, MetricSample, StatementSnapshot
from monitoring.selectors.base import catalog_cursor, fetch_all
from monitoring.selectors.statements import STATEMENTS_SQL, statements_available

PROMETHEUS_STATE_KEY = "monitoring:prometheus-previous:v1"


def _histogram_buckets(families, name: str) -> dict[float, float]:
    buckets: dict[float, float] = {}
    for family in families:
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets


def _counter_totals(families, name: str) -> dict[str, float]:
    """{status class ("2xx", "5xx"...): total} of a django-prometheus response counter."""
    totals: dict[str, float] = {}
    for family in families:
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                status = str(sample.labels.get("status", ""))[:1] + "xx"
                totals[status] = totals.get(status, 0.0) + sample.value
    return totals


def quantile_from_buckets(buckets: dict[float, float], q: float) -> float | None:
    """Prometheus' histogram_quantile over cumulative buckets (linear within the bucket)."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            width = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / width if width else 1)
        lower_bound, lower_count = bound, count
    return lower_bound


def request_figures() -> dict:
    """p95 database query time and HTTP error rate over the minute since the previous sample,
    from the Prometheus metrics every process records (PROMETHEUS_MULTIPROC_DIR: all processes)."""
    from project.metrics import metrics_registry

    families = list(metrics_registry().collect())
    current = {
        "query_buckets": _histogram_buckets(families, "django_db_query_duration_seconds"),
        "responses": _counter_totals(families, "django_http_responses_total_by_status_view_method"),
    }
    previous = cache.get(PROMETHEUS_STATE_KEY)
    cache.set(PROMETHEUS_STATE_KEY, current, 3600)
    if previous is None:
        return {}
    delta_buckets = {
        bound: count - previous["query_buckets"].get(bound, 0.0) for bound, count in current["query_buckets"].items()
    }
    figures = {}
    if delta_buckets and min(delta_buckets.values()) >= 0:  # a restart resets counters: skip that minute
        p95 = quantile_from_buckets(delta_buckets, 0.95)
        if p95 is not None:
            figures["db.query_p95_ms"] = p95 * 1000
    delta_responses = {k: v - previous["responses"].get(k, 0.0) for k, v in current["responses"].items()}
    total = sum(delta_responses.values())
    if total > 0 and min(delta_responses.values()) >= 0:
        figures["http.requests"] = total
        figures["http.error_rate"] = delta_responses.get("5xx", 0.0) / total
    return figures


def samples_from_figures(figures: dict, taken_at: datetime) -> list[MetricSample]:
    rows: list[tuple[str, str, float | None]] = []
    if cache_hit := figures.get("cache_hit"):
        rows += [("db.cache_hit", "table", cache_hit["table"]), ("db.cache_hit", "index", cache_hit["index"])]
    if conns := figures.get("connections"):
        rows += [("db.connections", row["state"], row["connections"]) for row in conns["by_state"]]
        rows += [
            ("db.connections_total", "", conns["client_connections"]),
            ("db.max_connections", "", conns["max_connections"]),
        ]
    if (pools := figures.get("pools")) and pools.get("available"):
        for process in pools["processes"]:
            rows += [
                ("pool.usage_ratio", process["process"], process.get("usage_ratio")),
                ("pool.waiting", process["process"], process.get("waiting")),
            ]
        rows.append(("pool.usage_ratio_total", "", pools["totals"].get("usage_ratio")))
    if (queues := figures.get("queues")) and queues.get("available"):
        rows += [("celery.queue_depth", row["queue"], row["depth"]) for row in queues["queues"]]
    if approvals := figures.get("approvals"):
        rows += [
            ("backlog.approvals_pending", "", approvals["count"]),
            ("backlog.approvals_oldest_age_s", "", approvals["oldest_age_s"]),
            ("backlog.approvals_p95_age_s", "", approvals["p95_age_s"]),
        ]
    if recon := figures.get("reconciliation"):
        rows += [("recon.executions", status, value["count"]) for status, value in recon["executions"].items()]
        rows += [
            ("recon.webhook_deliveries", status, value["count"])
            for status, value in recon["webhook_deliveries"].items()
        ]
        rows.append(("recon.unmatched_open", "", recon["unmatched_open"]["count"]))
    if node := figures.get("node"):
        rows += [
            ("system.cpu_percent", "", node["cpu_percent"]),
            ("system.memory_percent", "", node["memory_percent"]),
            ("system.load1", "", node["load_average"][0]),
        ]
    if database := figures.get("database"):
        rows.append(("db.size_bytes", "", database["size_bytes"]))
    rows += [(name, "", value) for name, value in (figures.get("requests") or {}).items()]
    return [
        MetricSample(taken_at=taken_at, name=name, key=key[:200], value=float(value))
        for name, key, value in rows
        if value is not None
    ]


def sample_metrics(now: datetime | None = None) -> dict:
    """One minute's samples: collect the figures (and cache them), store them, prune old ones."""
    now = (now or timezone.now()).replace(second=0, microsecond=0)
    figures = collect_figures()
    figures["requests"] = request_figures()
    samples = samples_from_figures(figures, now)
    MetricSample.objects.bulk_create(samples)
    from monitoring.report import full_report

    full_report(refresh=True)  # the overview and the JSON report read this copy for the next minute
    pruned, _ = MetricSample.objects.filter(
        taken_at__lt=now - timedelta(days=settings.MONITORING_HISTORY_DAYS)
    ).delete()
    return {
        "samples": len(samples),
        "pruned": pruned,
        "figures_ms": figures["duration_ms"],
        "errors": figures["errors"],
    }


STATEMENT_COLUMNS = ("queryid", "userid", "dbid", "calls", "total_exec_ms", "rows", "shared_blks_hit",
                     "shared_blks_read")  # fmt: skip
INDEX_COLUMNS = ("schema", "index", "table", "idx_scan", "idx_tup_read", "idx_tup_fetch")


def _columns(rows: list[dict], names: tuple[str, ...]) -> list[list]:
    return [[row[name] for row in rows] for name in names]


def _write_statement_snapshots(cursor, now: datetime, statements: list[dict]) -> int:
    """One INSERT of the statements whose calls changed since their newest snapshot."""
    table = StatementSnapshot._meta.db_table
    cursor.execute(
        f"""
        INSERT INTO {table} (taken_at, queryid, userid, dbid, calls, total_exec_ms, rows,
                             shared_blks_hit, shared_blks_read)
        SELECT %s, s.* FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[],
                                   %s::float8[], %s::bigint[], %s::bigint[], %s::bigint[])
             AS s(queryid, userid, dbid, calls, total_exec_ms, rows, hit, read)
        WHERE s.calls IS DISTINCT FROM (
            SELECT p.calls FROM {table} p
            WHERE p.queryid = s.queryid AND p.userid = s.userid AND p.dbid = s.dbid
            ORDER BY p.taken_at DESC LIMIT 1)
        """,
        [now, *_columns(statements, STATEMENT_COLUMNS)],
    )
    return cursor.rowcount


def _write_index_snapshots(cursor, now: datetime, indexes: list[dict]) -> int:
    """One INSERT of the indexes whose scan count changed since their newest snapshot."""
    table = IndexUsageSnapshot._meta.db_table
    cursor.execute(
        f"""
        INSERT INTO {table} (taken_at, schema, index, "table", idx_scan, idx_tup_read, idx_tup_fetch)
        SELECT %s, s.* FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[],
                                   %s::bigint[]) AS s(schema, index, tbl, idx_scan, tup_read, tup_fetch)
        WHERE s.idx_scan IS DISTINCT FROM (
            SELECT p.idx_scan FROM {table} p
            WHERE p.schema = s.schema AND p.index = s.index ORDER BY p.taken_at DESC LIMIT 1)
        """,
        [now, *_columns(indexes, INDEX_COLUMNS)],
    )
    return cursor.rowcount


def _prune_snapshots(cursor, cutoff: datetime) -> None:
    """Drop rows past the cutoff, keeping every statement's and index's newest (the baseline)."""
    stmt_table, idx_table = StatementSnapshot._meta.db_table, IndexUsageSnapshot._meta.db_table
    cursor.execute(
        f"""
        DELETE FROM {stmt_table} o WHERE o.taken_at < %s AND EXISTS (
            SELECT 1 FROM {stmt_table} n WHERE n.queryid = o.queryid AND n.userid = o.userid
            AND n.dbid = o.dbid AND n.taken_at > o.taken_at)
        """,
        [cutoff],
    )
    cursor.execute(
        f"""
        DELETE FROM {idx_table} o WHERE o.taken_at < %s AND EXISTS (
            SELECT 1 FROM {idx_table} n WHERE n.schema = o.schema AND n.index = o.index
            AND n.taken_at > o.taken_at)
        """,
        [cutoff],
    )


def snapshot_counters(now: datetime | None = None) -> dict:
    """Write pg_stat_statements and pg_stat_user_indexes counters that changed since their last
    snapshot (all of them the first time), and prune history past MONITORING_HISTORY_DAYS while
    keeping every statement's and index's newest row (the baseline of later windows)."""
    now = now or timezone.now()
    written = {"statements": 0, "indexes": 0}
    with catalog_cursor() as cursor:
        available = statements_available(cursor)
        statements = fetch_all(cursor, STATEMENTS_SQL) if available else []
        indexes = fetch_all(
            cursor,
            """
            SELECT schemaname AS schema, indexrelname AS index, relname AS "table",
                   idx_scan, idx_tup_read, idx_tup_fetch
            FROM pg_stat_user_indexes
            """,
        )
    with transaction.atomic(), connection.cursor() as cursor:
        if statements:
            written["statements"] = _write_statement_snapshots(cursor, now, statements)
        if indexes:
            written["indexes"] = _write_index_snapshots(cursor, now, indexes)
        _prune_snapshots(cursor, now - timedelta(days=settings.MONITORING_HISTORY_DAYS))
    return {"statements_available": available, **written}


def index_scans_since(since: datetime) -> dict[tuple[str, str], dict]:
    """Per index: scans gained since `since` (from the snapshots), when its counter was last seen
    growing, and when it was first snapshotted: each an index probe on idxsnap_index_taken_idx.

    Statistics (and so snapshots) exist per partition: a partitioned index gets the sum of its
    partitions' scans, the latest growth and the earliest snapshot among them, under its own name.
    """
    table = IndexUsageSnapshot._meta.db_table
    with catalog_cursor() as cursor:
        rows = fetch_all(
            cursor,
            f"""
            WITH current AS (
                -- The catalog's names compare in collation "C"; the snapshot's index is in the
                -- database's default collation and serves only comparisons in that one.
                SELECT s.schemaname::text COLLATE "default" AS schema, s.indexrelname::text COLLATE "default" AS index,
                       s.idx_scan, rn.nspname AS root_schema, r.relname AS root_index
                FROM pg_stat_user_indexes s
                JOIN pg_class r ON r.oid = coalesce(pg_partition_root(s.indexrelid), s.indexrelid)
                JOIN pg_namespace rn ON rn.oid = r.relnamespace
            )
            SELECT c.root_schema, c.root_index, c.idx_scan,
                   (SELECT b.idx_scan FROM {table} b WHERE b.schema = c.schema AND b.index = c.index
                      AND b.taken_at <= %s ORDER BY b.taken_at DESC LIMIT 1) AS baseline,
                   first.taken_at AS first_seen_at,
                   -- rows are written only when the counter moved: the newest one after the
                   -- first snapshot is when scans were last seen
                   (SELECT max(g.taken_at) FROM {table} g WHERE g.schema = c.schema AND g.index = c.index
                      AND g.taken_at > first.taken_at) AS last_growth_seen_at
            FROM current c
            LEFT JOIN LATERAL (
                SELECT f.taken_at FROM {table} f WHERE f.schema = c.schema AND f.index = c.index
                ORDER BY f.taken_at LIMIT 1
            ) AS first ON true
            """,
            [since],
        )
    result: dict[tuple[str, str], dict] = {}
    for row in rows:
        entry = result.setdefault(
            (row["root_schema"], row["root_index"]),
            {"scans_in_window": 0, "last_growth_seen_at": None, "first_seen_at": None, "_complete": True},
        )
        if row["baseline"] is None or row["idx_scan"] < row["baseline"]:
            entry["_complete"] = False  # no snapshot before the window (or a reset): no exact count
        else:
            entry["scans_in_window"] += row["idx_scan"] - row["baseline"]
        for key, pick in (("last_growth_seen_at", max), ("first_seen_at", min)):
            if row[key] is not None:
                entry[key] = row[key] if entry[key] is None else pick(entry[key], row[key])
    for entry in result.values():
        if not entry.pop("_complete"):
            entry["scans_in_window"] = None
    return result


CHART_POINTS = 288  # per series: one every 5 minutes over 24 h, one every 70 minutes over 14 days


def series(names: list[str], *, hours: int = 24, now: datetime | None = None) -> dict[str, dict[str, list]]:
    """{name: {key: [[epoch_ms, value], ...]}} for charts, from the minute samples, averaged into
    at most CHART_POINTS buckets per series (date_bin), so a 14-day chart is no heavier than a day's."""
    now = now or timezone.now()
    bucket_s = max(60, hours * 3600 // CHART_POINTS)
    result: dict[str, dict[str, list]] = {name: {} for name in names}
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT name, key, date_bin(make_interval(secs => %s), taken_at, '2000-01-01') AS bucket, avg(value)
            FROM {MetricSample._meta.db_table}
            WHERE name = ANY(%s) AND taken_at >= %s
            GROUP BY 1, 2, 3
            ORDER BY 3
            """,
            [bucket_s, names, now - timedelta(hours=hours)],
        )
        for name, key, bucket, value in cursor.fetchall():
            points = result[name].setdefault(key, [])
            moment = int(bucket.timestamp() * 1000)
            if points and moment - points[-1][0] > 2 * bucket_s * 1000:
                # No samples (the sampler was not running): a gap in the line, not a slope.
                points.append([points[-1][0] + bucket_s * 1000, None])
            points.append([moment, value])
    return result
