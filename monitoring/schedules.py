"""Beat schedules of the monitoring cockpit, collected by project/schedules.py.

The cockpit's history (monitoring/history.py): figures every minute, counters every 5."""

from project.schedules import Schedule

SCHEDULES = [
    Schedule(
        name="Monitoring: sample figures",
        job="monitoring.sample_metrics",
        queue="default",
        crontab={"minute": "*"},
        description="Store the cockpit's key figures (MetricSample, 14 days) and cache them for /metrics.",
        expires_s=55,
    ),
    Schedule(
        name="Monitoring: snapshot statement and index counters",
        job="monitoring.snapshot_counters",
        queue="default",
        crontab={"minute": "*/5"},
        description="Snapshot pg_stat_statements and index-usage counters for window deltas.",
        expires_s=240,
    ),
    Schedule(
        name="Monitoring: inspect workers",
        job="monitoring.inspect_workers",
        queue="default",
        crontab={"minute": "*"},
        description="Ask the Celery workers for active, reserved and scheduled jobs (cached for the pages).",
        expires_s=55,
    ),
]
