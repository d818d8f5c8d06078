"""mv_job_performance: a run's match rate is the one its summary reports.

0002 recounted each run's rate from the Match and Unmatched rows it wrote (records it matched /
records it settled), which leaves out the backlog a run leaves open without a new exception, and
read 90 days of matches to do it. The matcher's summary already says what share of the job's
records was matched when the run finished (`summary.match_rate`: the figure of the summary
endpoint and of reconciliation_match_rate); the view now averages that, adds the latest one, and
reads only the execution and job tables.
"""

import importlib

from django.db import migrations

_0002 = importlib.import_module("reconciliation.migrations.0002_materialized_views")

JOB_PERFORMANCE = f"""
CREATE MATERIALIZED VIEW mv_job_performance AS
WITH runs AS (
    SELECT id, tenant_id, job_id, status, created_at, started_at,
           extract(epoch FROM finished_at - started_at) AS duration_s,
           -- Only a succeeded run's summary holds the final rate; anything else in it is ignored.
           CASE WHEN status = 'succeeded' AND jsonb_typeof(summary -> 'match_rate') = 'number'
                THEN (summary ->> 'match_rate')::numeric END AS match_rate
    FROM reconciliation_execution
    WHERE created_at >= {_0002.SINCE_90_DAYS} AND NOT dry_run
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
       round(avg(r.match_rate), 4) AS avg_match_rate,
       (array_agg(r.match_rate ORDER BY r.created_at DESC, r.id DESC) FILTER (WHERE r.match_rate IS NOT NULL))[1]
           AS last_match_rate
FROM reconciliation_reconciliationjob AS job
LEFT JOIN runs AS r ON r.job_id = job.id
GROUP BY job.tenant_id, job.id
"""

UNIQUE_INDEX = "CREATE UNIQUE INDEX mv_job_performance_uniq ON mv_job_performance (tenant_id, job_id)"
DROP = "DROP MATERIALIZED VIEW IF EXISTS mv_job_performance"


class Migration(migrations.Migration):
    dependencies = [
        ("reconciliation", "0002_materialized_views"),
    ]

    operations = [
        # One transaction: readers wait on the drop's lock for the few ms of the re-create.
        migrations.RunSQL(
            [DROP, JOB_PERFORMANCE, UNIQUE_INDEX],
            reverse_sql=[DROP, _0002.JOB_PERFORMANCE, UNIQUE_INDEX],
        ),
    ]
