"""Monitoring owns no domain data: a permission anchor for the cockpit, and the history it keeps."""

from django.db import models


class Dashboard(models.Model):
    """No table: the admin index links the cockpit through it, and it carries its permission.

    `default_permissions = ("view",)` gives exactly `monitoring.view_dashboard`; every action on
    the pages needs a superuser on top of it.
    """

    class Meta:
        managed = False
        default_permissions = ("view",)
        verbose_name = "performance cockpit"
        verbose_name_plural = "performance cockpit"

    def __str__(self) -> str:
        return "Performance cockpit"


class MetricSample(models.Model):
    """One figure at one minute (`key` tells series of one metric apart: a queue, a process).

    Written every minute by `monitoring.sample_metrics`, kept MONITORING_HISTORY_DAYS (14) days:
    charts and "since when" answers survive restarts, unlike Flower's or PgHero's counters.
    """

    taken_at = models.DateTimeField()
    name = models.CharField(max_length=100)
    key = models.CharField(max_length=200, blank=True, default="")
    value = models.FloatField()

    class Meta:
        indexes = [
            # Charts: one metric over a window, all keys, read from the index alone.
            models.Index(fields=["name", "taken_at"], include=["key", "value"], name="metricsample_chart_idx"),
            # Pruning deletes by age.
            models.Index(fields=["taken_at"], name="metricsample_taken_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name}[{self.key}]={self.value} at {self.taken_at:%Y-%m-%d %H:%M}"


class StatementSnapshot(models.Model):
    """pg_stat_statements counters of one statement at one 5-minute snapshot.

    Only statements whose calls changed since their previous row are written (the first snapshot
    writes all), and pruning keeps each statement's newest row: the counters as of any moment in
    the last 14 days are the newest row at or before it, so a window's delta is exact.
    """

    taken_at = models.DateTimeField()
    queryid = models.BigIntegerField()
    userid = models.BigIntegerField()
    dbid = models.BigIntegerField()
    calls = models.BigIntegerField()
    total_exec_ms = models.FloatField()
    rows = models.BigIntegerField()
    shared_blks_hit = models.BigIntegerField()
    shared_blks_read = models.BigIntegerField()

    class Meta:
        indexes = [
            # "counters of every statement as of t": DISTINCT ON (queryid...) ... taken_at <= t.
            # No index on taken_at alone: the planner would walk it backwards for the baseline
            # probes (2.5 ms each instead of 0.02); pruning every 5 minutes can afford a scan.
            models.Index(fields=["queryid", "userid", "dbid", "taken_at"], name="stmtsnap_query_taken_idx"),
        ]

    def __str__(self) -> str:
        return f"statement {self.queryid} at {self.taken_at:%Y-%m-%d %H:%M}: {self.calls} calls"


class IndexUsageSnapshot(models.Model):
    """pg_stat_user_indexes counters of one index at one 5-minute snapshot (written when changed).

    Answers "unused since when?" on any PostgreSQL version (the newest row whose idx_scan grew)
    and scans per day over a window.
    """

    taken_at = models.DateTimeField()
    schema = models.CharField(max_length=200)
    index = models.CharField(max_length=200)
    table = models.CharField(max_length=200)
    idx_scan = models.BigIntegerField()
    idx_tup_read = models.BigIntegerField()
    idx_tup_fetch = models.BigIntegerField()

    class Meta:
        indexes = [
            models.Index(fields=["schema", "index", "taken_at"], name="idxsnap_index_taken_idx"),  # see above
        ]

    def __str__(self) -> str:
        return f"{self.schema}.{self.index} at {self.taken_at:%Y-%m-%d %H:%M}: {self.idx_scan} scans"
