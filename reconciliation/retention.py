"""Reconciliation's tables under the platform's retention (project/retention.py).

Executions and reports are business records: archived (archive.<table>), never deleted. A
succeeded execution keeps its row while its Report (the figures kept once its matches are long
archived) is in the table; the report is archived after a year and its execution follows in the
next run. Matches and exceptions are monthly partitions, archived whole by maintain_partitions.
"""

from project.retention import ARCHIVE, RetentionPolicy, register_retention

register_retention(
    RetentionPolicy(
        model="reconciliation.Report",
        age_field="created_at",
        keep_days=365,
        mode=ARCHIVE,
        business=True,
        kept="a year of execution reports",
    )
)
register_retention(
    RetentionPolicy(
        model="reconciliation.Execution",
        age_field="finished_at",  # NULL (queued, running) is never old
        keep_days=90,
        mode=ARCHIVE,
        business=True,
        prunable=(
            "t.status IN ('succeeded', 'failed', 'cancelled')"
            " AND NOT EXISTS (SELECT 1 FROM reconciliation_report r WHERE r.execution_id = t.id)"
        ),
        kept="queued and running executions, those whose report is still kept, and 90 days of finished ones",
    )
)
register_retention(
    RetentionPolicy(
        model="reconciliation.WebhookDelivery",
        age_field="created_at",
        keep_days=30,
        mode=ARCHIVE,  # "did you notify us?" is answered from archive.reconciliation_webhookdelivery
        prunable="t.status IN ('delivered', 'dead')",
        kept="pending and failed deliveries (still to be retried), and 30 days of finished ones",
    )
)
