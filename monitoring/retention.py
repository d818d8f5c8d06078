"""The cockpit's history under the platform's retention (project/retention.py): kept
MONITORING_HISTORY_DAYS, then deleted (it is measurement, not a business record)."""

from project.retention import DELETE, RetentionPolicy, register_retention

register_retention(
    RetentionPolicy(
        model="monitoring.MetricSample",
        age_field="taken_at",  # metricsample_taken_idx
        keep_days=14,
        keep_days_setting="MONITORING_HISTORY_DAYS",
        mode=DELETE,
        batch_size=5000,  # ~100 samples a minute: a day is ~150k rows
        kept="MONITORING_HISTORY_DAYS of minute samples",
    )
)
# A window's delta needs the counters as of its start: the newest row at or before it. So every
# statement's and index's newest row stays, however old (an idle statement's baseline).
register_retention(
    RetentionPolicy(
        model="monitoring.StatementSnapshot",
        age_field="taken_at",
        keep_days=14,
        keep_days_setting="MONITORING_HISTORY_DAYS",
        mode=DELETE,
        batch_size=5000,
        prunable=(
            "EXISTS (SELECT 1 FROM {table} n WHERE n.queryid = t.queryid AND n.userid = t.userid"
            " AND n.dbid = t.dbid AND n.taken_at > t.taken_at)"
        ),
        kept="each statement's newest snapshot, and MONITORING_HISTORY_DAYS of snapshots",
    )
)
register_retention(
    RetentionPolicy(
        model="monitoring.IndexUsageSnapshot",
        age_field="taken_at",
        keep_days=14,
        keep_days_setting="MONITORING_HISTORY_DAYS",
        mode=DELETE,
        batch_size=5000,
        prunable=(
            "EXISTS (SELECT 1 FROM {table} n WHERE n.schema = t.schema AND n.index = t.index"
            " AND n.taken_at > t.taken_at)"
        ),
        kept="each index's newest snapshot, and MONITORING_HISTORY_DAYS of snapshots",
    )
)
