"""The four analytics materialized views of reconciliation (docs/reconciliation-analytics.md).

mv_job_performance is re-created by 0003 (its match rate comes from the runs' summaries).

Each has a unique index, which REFRESH MATERIALIZED VIEW CONCURRENTLY needs; tenant_id leads it
because every read is tenant-scoped. The time-series views aggregate a bounded window (90 days
daily, 30 days hourly) on the partition keys of Match and Unmatched, so a refresh reads only the
recent partitions (pruned at executor start-up: the bound is a stable expression of now()).
The views are created WITH DATA: they are readable at once, and on a fresh database that is free.

Figures come from the tables (Execution, Match, Unmatched, Record), not from Execution.summary,
so a view and the rows it summarises cannot disagree about what a figure means. Dry runs write
no matches and are left out of every figure.
"""

from django.db import migrations

# Midnight UTC `days - 1` days ago: a window of `days` whole UTC days, today included.
SINCE_DAYS = "((date_trunc('day', now() AT TIME ZONE 'UTC') - interval '{days} days') AT TIME ZONE 'UTC')"
SINCE_90_DAYS = SINCE_DAYS.format(days=89)
SINCE_30_DAYS = SINCE_DAYS.format(days=29)

SUMMARY_DAILY = f"""
CREATE MATERIALIZED VIEW mv_reconciliation_summary_daily AS
SELECT tenant_id, job_id, day,
       sum(executions)::int AS executions,
       sum(succeeded)::int AS succeeded,
       sum(failed)::int AS failed,
       sum(matches)::int AS matches,
       sum(matched_records)::bigint AS matched_records,
       sum(exceptions)::bigint AS exceptions,
       sum(open_records)::bigint AS open_records,
       round(sum(matched_records) / nullif(sum(matched_records) + sum(exceptions), 0), 4) AS match_rate,
       sum(amount_matched_left)::numeric(24, 4) AS amount_matched_left,
       sum(amount_matched_right)::numeric(24, 4) AS amount_matched_right,
       sum(amount_open)::numeric(24, 4) AS amount_open
FROM (
    SELECT tenant_id, job_id, (created_at AT TIME ZONE 'UTC')::date AS day,
           count(*) AS executions,
           count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           0 AS matches, 0 AS matched_records, 0 AS exceptions, 0 AS open_records,
           0 AS amount_matched_left, 0 AS amount_matched_right, 0 AS amount_open
    FROM reconciliation_execution
    WHERE created_at >= {SINCE_90_DAYS} AND NOT dry_run
    GROUP BY 1, 2, 3
    UNION ALL
    -- A rejected match gave its records back (they are open again): it matched nothing.
    SELECT tenant_id, job_id, (matched_at AT TIME ZONE 'UTC')::date,
           0, 0, 0,
           count(*),
           sum(cardinality(left_ids) + cardinality(right_ids)),
           0, 0,
           sum(left_amount), sum(right_amount), 0
    FROM reconciliation_match
    WHERE matched_at >= {SINCE_90_DAYS} AND status <> 'rejected'
    GROUP BY 1, 2, 3
    UNION ALL
    SELECT tenant_id, job_id, (created_at AT TIME ZONE 'UTC')::date,
           0, 0, 0, 0, 0,
           count(*),
           count(*) FILTER (WHERE resolved_at IS NULL),
           0, 0,
           coalesce(sum(amount) FILTER (WHERE resolved_at IS NULL), 0)
    FROM reconciliation_unmatched
    WHERE created_at >= {SINCE_90_DAYS}
    GROUP BY 1, 2, 3
) AS parts
GROUP BY tenant_id, job_id, day
"""

JOB_PERFORMANCE = f"""
CREATE MATERIALIZED VIEW mv_job_performance AS
WITH runs AS (
    SELECT id, tenant_id, job_id, status, created_at, started_at,
           extract(epoch FROM finished_at - started_at) AS duration_s
    FROM reconciliation_execution
    WHERE created_at >= {SINCE_90_DAYS} AND NOT dry_run
),
matched AS (
    SELECT execution_id, sum(cardinality(left_ids) + cardinality(right_ids)) AS records
    FROM reconciliation_match
    WHERE matched_at >= {SINCE_90_DAYS} AND execution_id IS NOT NULL AND status <> 'rejected'
    GROUP BY execution_id
),
left_open AS (
    SELECT execution_id, count(*) AS records
    FROM reconciliation_unmatched
    WHERE created_at >= {SINCE_90_DAYS} AND execution_id IS NOT NULL
    GROUP BY execution_id
),
run_rates AS (
    -- Of the records a run settled (matched, or left as a new exception), the share it matched.
    SELECT runs.*,
           coalesce(matched.records, 0)::numeric
               / nullif(coalesce(matched.records, 0) + coalesce(left_open.records, 0), 0) AS match_rate
    FROM runs
    LEFT JOIN matched ON matched.execution_id = runs.id
    LEFT JOIN left_open ON left_open.execution_id = runs.id
)
SELECT job.tenant_id, job.id AS job_id,
       count(r.id)::int AS executions,
       (count(*) FILTER (WHERE r.status = 'succeeded'))::int AS succeeded,
       (count(*) FILTER (WHERE r.status = 'failed'))::int AS failed,
       (count(*) FILTER (WHERE r.status = 'cancelled'))::int AS cancelled,
       round((count(*) FILTER (WHERE r.status = 'succeeded'))::numeric
             / nullif(count(*) FILTER (WHERE r.status IN ('succeeded', 'failed')), 0), 4) AS success_rate,
       round((avg(r.duration_s) FILTER (WHERE r.status = 'succeeded'))::numeric, 3) AS avg_duration_s,
       round((percentile_cont(0.95) WITHIN GROUP (ORDER BY r.duration_s)
              FILTER (WHERE r.status = 'succeeded'))::numeric, 3) AS p95_duration_s,
       max(r.started_at) AS last_run_at,
       (array_agg(r.status ORDER BY r.created_at DESC, r.id DESC) FILTER (WHERE r.id IS NOT NULL))[1]
           AS last_status,
       round(avg(r.match_rate) FILTER (WHERE r.status = 'succeeded'), 4) AS avg_match_rate
FROM reconciliation_reconciliationjob AS job
LEFT JOIN run_rates AS r ON r.job_id = job.id
GROUP BY job.tenant_id, job.id
"""

TENANT_USAGE_HOURLY = f"""
CREATE MATERIALIZED VIEW mv_tenant_usage_hourly AS
SELECT tenant_id, hour,
       sum(records_ingested)::bigint AS records_ingested,
       sum(executions)::int AS executions,
       sum(matches_created)::bigint AS matches_created
FROM (
    SELECT tenant_id, date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
           count(*) AS records_ingested, 0 AS executions, 0 AS matches_created
    FROM reconciliation_record
    WHERE created_at >= {SINCE_30_DAYS}
    GROUP BY 1, 2
    UNION ALL
    SELECT tenant_id, date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', 0, count(*), 0
    FROM reconciliation_execution
    WHERE created_at >= {SINCE_30_DAYS} AND NOT dry_run
    GROUP BY 1, 2
    UNION ALL
    SELECT tenant_id, date_trunc('hour', matched_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', 0, 0, count(*)
    FROM reconciliation_match
    WHERE matched_at >= {SINCE_30_DAYS}
    GROUP BY 1, 2
) AS parts
GROUP BY tenant_id, hour
"""

MATCH_ACCURACY = f"""
CREATE MATERIALIZED VIEW mv_match_accuracy_by_job AS
WITH per_pass AS (
    -- Matches the matcher made (a person's manual match is not a prediction to grade).
    SELECT tenant_id, job_id, pass_name,
           count(*) AS matches,
           count(*) FILTER (WHERE status = 'auto') AS auto,
           count(*) FILTER (WHERE status = 'suggested') AS suggested,
           count(*) FILTER (WHERE status = 'confirmed') AS confirmed,
           count(*) FILTER (WHERE status = 'rejected') AS rejected,
           avg(confidence) FILTER (WHERE status = 'confirmed') AS avg_confidence_confirmed,
           avg(confidence) FILTER (WHERE status = 'rejected') AS avg_confidence_rejected
    FROM reconciliation_match
    WHERE matched_at >= {SINCE_90_DAYS} AND pass_name <> 'manual'
    GROUP BY 1, 2, 3
)
SELECT tenant_id, job_id,
       sum(matches)::bigint AS matches,
       sum(auto)::bigint AS auto,
       sum(suggested)::bigint AS suggested,
       sum(confirmed)::bigint AS confirmed,
       sum(rejected)::bigint AS rejected,
       (sum(confirmed) + sum(rejected))::bigint AS reviewed,
       round(sum(confirmed) / nullif(sum(confirmed) + sum(rejected), 0), 4) AS accuracy,
       jsonb_object_agg(
           pass_name,
           jsonb_build_object(
               'matches', matches, 'auto', auto, 'suggested', suggested,
               'confirmed', confirmed, 'rejected', rejected, 'reviewed', confirmed + rejected,
               'accuracy', round(confirmed::numeric / nullif(confirmed + rejected, 0), 4),
               'avg_confidence_confirmed', round(avg_confidence_confirmed, 4),
               'avg_confidence_rejected', round(avg_confidence_rejected, 4)
           )
       ) AS by_pass
FROM per_pass
GROUP BY tenant_id, job_id
"""


class Migration(migrations.Migration):
    dependencies = [
        ("reconciliation", "0001_initial"),
    ]

    operations = [
        migrations.RunSQL(
            [
                SUMMARY_DAILY,
                "CREATE UNIQUE INDEX mv_recon_summary_daily_uniq ON mv_reconciliation_summary_daily"
                " (tenant_id, job_id, day)",
            ],
            reverse_sql="DROP MATERIALIZED VIEW IF EXISTS mv_reconciliation_summary_daily",
        ),
        migrations.RunSQL(
            [
                JOB_PERFORMANCE,
                "CREATE UNIQUE INDEX mv_job_performance_uniq ON mv_job_performance (tenant_id, job_id)",
            ],
            reverse_sql="DROP MATERIALIZED VIEW IF EXISTS mv_job_performance",
        ),
        migrations.RunSQL(
            [
                TENANT_USAGE_HOURLY,
                "CREATE UNIQUE INDEX mv_tenant_usage_hourly_uniq ON mv_tenant_usage_hourly (tenant_id, hour)",
            ],
            reverse_sql="DROP MATERIALIZED VIEW IF EXISTS mv_tenant_usage_hourly",
        ),
        migrations.RunSQL(
            [
                MATCH_ACCURACY,
                "CREATE UNIQUE INDEX mv_match_accuracy_by_job_uniq ON mv_match_accuracy_by_job (tenant_id, job_id)",
            ],
            reverse_sql="DROP MATERIALIZED VIEW IF EXISTS mv_match_accuracy_by_job",
        ),
    ]
