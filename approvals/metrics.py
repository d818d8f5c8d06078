"""Prometheus metrics of the automation (names from the approvals guide).

Workers and web are separate processes: run them with PROMETHEUS_MULTIPROC_DIR set (make run
does) so /metrics aggregates what every process recorded.
"""

from prometheus_client import Counter, Gauge, Histogram

automation_job_duration_seconds = Histogram(
    "automation_job_duration_seconds",
    "Wall time of one automation run.",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 20, 30, 60),
)
automation_rule_evaluation_seconds = Histogram(
    "automation_rule_evaluation_seconds",
    "Time to evaluate the rule on and decide one batch.",
    buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1),
)
# Per batch (one claim-evaluate-decide transaction), with buckets around the 30 ms the
# HighAutomationDuration alert holds it to: a whole run takes up to AUTOMATION_RUN_TIMEOUT_S by
# design, so only a batch's time says whether deciding is slow.
automation_batch_duration_seconds = Histogram(
    "automation_batch_duration_seconds",
    "Wall time of one automation batch: claim, evaluate the policy, decide, audit.",
    buckets=(0.005, 0.01, 0.02, 0.025, 0.03, 0.035, 0.05, 0.1, 0.25, 1),
)
automation_decisions_total = Counter("automation_decisions_total", "Versions decided by the automation.", ["decision"])
automation_runs_skipped_total = Counter(
    "automation_runs_skipped_total", "Automation runs skipped, by reason.", ["reason"]
)
versions_pending_count = Gauge(
    "versions_pending_count", "Versions waiting for a decision.", multiprocess_mode="mostrecent"
)
automation_false_positive_rate = Gauge(
    "automation_false_positive_rate",
    "Share of automated decisions reverted by a person within FALSE_POSITIVE_WINDOW_HOURS.",
    multiprocess_mode="mostrecent",
)
