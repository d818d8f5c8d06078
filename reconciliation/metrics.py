"""Prometheus metrics of reconciliation (names from the reconciliation guide, 001).

Workers and web are separate processes: with PROMETHEUS_MULTIPROC_DIR set (make run does) /metrics
adds up what every process recorded.
"""

from prometheus_client import Counter, Gauge, Histogram

reconciliations_total = Counter("reconciliations_total", "Finished executions, by outcome.", ["status"])
reconciliation_duration_seconds = Histogram(
    "reconciliation_duration_seconds",
    "Wall time of one execution, from start to its summary.",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)
reconciliation_match_rate = Gauge(
    "reconciliation_match_rate",
    "Share of the records of the last finished execution that are matched (auto, suggested or confirmed).",
    multiprocess_mode="mostrecent",
)
records_ingested_total = Counter("records_ingested_total", "Records inserted by uploads (re-uploads excluded).")
