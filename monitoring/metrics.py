"""Prometheus figures of the cockpit, on web's /metrics (names agreed in the interfaces note).

A scrape reads the figures the minute sampler cached (monitoring.figures); only when nobody
computed them in the last MONITORING_METRICS_CACHE_S does it compute them itself, once.
"""

import logging

from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger("opsdeck.monitoring")


class MonitoringCollector:
    def collect(self):
        from monitoring.figures import cached_figures

        try:
            figures = cached_figures()
        except Exception as exc:  # a scrape never fails because a figure could not be read
            logger.warning("monitoring figures unavailable for /metrics", extra={"error": repr(exc)})
            return
        yield from families(figures)


def families(figures: dict):
    """Every gauge of the cockpit's figures: the database's, then the backlogs' and the replica's."""
    yield from _database_families(figures)
    yield from _backlog_and_replica_families(figures)


def _database_families(figures: dict):
    queue = GaugeMetricFamily("opsdeck_celery_queue_depth", "Messages waiting in a Celery queue.", labels=["queue"])
    for row in (figures.get("queues") or {}).get("queues", []):
        queue.add_metric([row["queue"]], row["depth"])
    yield queue

    hit = GaugeMetricFamily(
        "opsdeck_db_cache_hit_ratio", "Share of block reads served from shared buffers.", labels=["kind"]
    )
    for kind in ("table", "index"):
        value = (figures.get("cache_hit") or {}).get(kind)
        if value is not None:
            hit.add_metric([kind], value)
    yield hit

    conns = figures.get("connections") or {}
    connections = GaugeMetricFamily(
        "opsdeck_db_connections", "Client connections by state (pg_stat_activity).", labels=["state"]
    )
    for row in conns.get("by_state", []):
        connections.add_metric([row["state"]], row["connections"])
    yield connections
    if conns:
        yield GaugeMetricFamily(
            "opsdeck_db_max_connections", "PostgreSQL max_connections.", value=conns["max_connections"]
        )

    bloat = GaugeMetricFamily(
        "opsdeck_table_bloat_ratio", "Estimated share of a table's pages that is bloat.", labels=["table"]
    )
    for table in figures.get("tables") or []:
        if table["bloat_ratio"] is not None and not table["matview"]:
            bloat.add_metric([_label(table)], table["bloat_ratio"])
    yield bloat

    ahead = GaugeMetricFamily(
        "opsdeck_partitions_ahead_months", "Whole months after the current one covered by partitions.", labels=["table"]
    )
    for table in figures.get("partitions") or []:
        if table["months_ahead"] is not None:
            ahead.add_metric([_label(table)], table["months_ahead"])
    yield ahead

    staleness = GaugeMetricFamily(
        "opsdeck_matview_staleness_seconds", "Seconds since the view's last successful refresh.", labels=["view"]
    )
    every = GaugeMetricFamily("opsdeck_matview_refresh_every_seconds", "The view's refresh period.", labels=["view"])
    for view in figures.get("materialized_views") or []:
        if not view.get("registered"):
            continue
        every.add_metric([view["name"]], view["refresh_every_s"])
        if view.get("staleness_s") is not None:
            staleness.add_metric([view["name"]], view["staleness_s"])
    yield staleness
    yield every


def _backlog_and_replica_families(figures: dict):
    recon = figures.get("reconciliation")
    webhooks = GaugeMetricFamily(
        "opsdeck_webhook_deliveries", "Webhook deliveries due, failed (to retry) and dead.", labels=["status"]
    )
    executions = GaugeMetricFamily(
        "opsdeck_reconciliation_executions", "Reconciliation executions queued, running and stuck.", labels=["status"]
    )
    if recon:
        for status, value in recon["webhook_deliveries"].items():
            webhooks.add_metric([status], value["count"])
        for status, value in recon["executions"].items():
            executions.add_metric([status], value["count"])
    yield webhooks
    yield executions

    oldest = GaugeMetricFamily(
        "opsdeck_backlog_oldest_pending_age_seconds", "Age of the oldest item waiting in a backlog.", labels=["kind"]
    )
    approvals = figures.get("approvals") or {}
    oldest.add_metric(["approvals_version"], approvals.get("oldest_age_s") or 0)
    yield oldest

    replica = figures.get("replica") or {}
    if replica.get("configured"):
        up = int(bool(replica.get("available")) and "lag_s" in replica)
        yield GaugeMetricFamily("opsdeck_db_replica_up", "1 if the read replica answers as a standby.", value=up)
        if "lag_s" in replica:
            lag_help = "Age of the last replayed transaction while WAL waits to be replayed (0: caught up)."
            yield GaugeMetricFamily("opsdeck_db_replica_lag_seconds", lag_help, value=replica["lag_s"])
            yield GaugeMetricFamily(
                "opsdeck_db_replica_lag_bytes", "WAL the read replica has still to replay.", value=replica["lag_bytes"]
            )


_collector = MonitoringCollector()


def register_collector() -> None:
    from project.metrics import register_metrics_collector

    register_metrics_collector(_collector)


def _label(table: dict) -> str:
    # Opsdeck's own tables keep their bare name (alerts and dashboards use it); another schema's
    # table of the same name must not make a duplicate series.
    return table["table"] if table.get("schema", "public") == "public" else f"{table['schema']}.{table['table']}"
