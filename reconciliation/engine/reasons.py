"""Why a record is still open: the reason filed with its exception after the passes.

Every open record of the working set gets the reason its best candidate on the other side gives
(see _open_records_with_reason_sql); record_exceptions files them, open_reasons_preview counts
them for a dry run.
"""

from contextlib import contextmanager

from django.db import connection

from reconciliation.engine.passes import (
    MatchingContext,
    index_working_set_windows,
    set_match_work_mem,
    tolerance_sql,
    window_box,
    window_point,
)


def _open_records_with_reason_sql(ctx: MatchingContext, *, without_open_exception: bool) -> str:
    """SELECT id, side, amount, reason of every open record of the working set.

    The reason names the record's best candidate on the other side, strongest evidence first:
    a record with the same reference in the date window that is

    1. of the same currency, within the drift, and matched to another record -> ambiguous (it
       was as good a partner, and went elsewhere);
    2. of another currency, amount within the drift -> currency_mismatch (only the currency
       keeps them apart);
    3. of the same currency, amount outside the drift -> amount_outside_drift;

    else an open record within the drift and window (other reference or none) -> low_confidence
    (the pair lacked evidence or scored below review_threshold); else no_candidate. Open
    candidates are probed in the working set's GiST index; the reference checks are one hash join.
    """
    rules = ctx.rules
    window = int(rules.date_window_days)
    tolerance = tolerance_sql(rules, "r.amount")
    amount_in_drift = f"o.amount BETWEEN r.amount - {tolerance} AND r.amount + {tolerance}"
    in_window = f"""o.currency = r.currency AND {amount_in_drift}
                    AND o.booked_on BETWEEN r.booked_on - {window} AND r.booked_on + {window}"""

    def open_records(table: str, side: str, other_table: str, other_side: str) -> str:
        return f"""
            SELECT r.id, '{side}' AS side, r.currency, r.amount, r.booked_on, r.ref,
                   EXISTS (SELECT 1 FROM {other_table} o
                           WHERE {window_point("o")} <@ {window_box("r", tolerance, window)} AND {in_window})
                       AS open_candidate,
                   '{other_side}' AS other_side
            FROM {table} r
            {exception_filter}
        """

    exception_filter = (
        """WHERE NOT EXISTS (SELECT 1 FROM reconciliation_unmatched u
                             WHERE u.record_id = r.id AND u.resolved_at IS NULL)"""
        if without_open_exception
        else ""
    )
    return f"""
        WITH open_records AS MATERIALIZED (
            {open_records(ctx.wl, "left", ctx.wr, "right")}
            UNION ALL
            {open_records(ctx.wr, "right", ctx.wl, "left")}
        ),
        same_reference AS (
            SELECT r.id,
                   bool_or(o.currency = r.currency AND {amount_in_drift}) AS in_drift,
                   bool_or(o.currency <> r.currency AND {amount_in_drift}) AS other_currency,
                   bool_or(o.currency = r.currency) AS same_currency
            FROM open_records r
            JOIN reconciliation_record o
              ON o.job_id = %(job)s AND o.reference_norm = r.ref AND o.side = r.other_side
             AND o.booked_on BETWEEN r.booked_on - {window} AND r.booked_on + {window}
            WHERE r.ref <> ''
            GROUP BY r.id
        )
        SELECT r.id, r.side, r.amount,
               CASE WHEN s.in_drift THEN 'ambiguous'
                    WHEN s.other_currency THEN 'currency_mismatch'
                    WHEN s.same_currency THEN 'amount_outside_drift'
                    WHEN r.open_candidate THEN 'low_confidence'
                    ELSE 'no_candidate'
               END AS reason
        FROM open_records r
        LEFT JOIN same_reference s ON s.id = r.id
    """


# The job's open exceptions whose record is matched now, closed. One probe of MatchedRecord's key
# per open exception: OFFSET 0 keeps the EXISTS a subplan, so the planner cannot turn it into a
# join driven by MatchedRecord. As a join, right after a first big run (1.4M MatchedRecord rows the
# statistics had not seen) it walked every MatchedRecord row and probed the exceptions' 14
# partitions for each: 3.7 s at 1M x 1M with nothing to close, 51 s once the table held dead rows.
CLOSE_MATCHED_EXCEPTIONS_SQL = """
    UPDATE reconciliation_unmatched u
    SET resolved_at = now(), resolution = 'matched by execution ' || %(execution)s
    WHERE u.tenant_id = %(tenant)s AND u.job_id = %(job)s AND u.resolved_at IS NULL
      AND EXISTS (SELECT 1 FROM reconciliation_matchedrecord m WHERE m.record_id = u.record_id OFFSET 0)
"""


@contextmanager
def hash_joins_only(cursor):
    """For one statement (SET LOCAL, then back): every join of the reasons statement hashes.

    Merge joins: left to itself the planner (no statistics on a CTE) sorted every record of the
    job to merge-join them, 4.9 s of the 6.3 s this statement took at 1M x 1M. Nested loops: a job
    whose records and exceptions the statistics have not seen yet (a fresh upload, before
    autovacuum's ANALYZE) looks like a job with one open record, and the planner walked the job's
    records once per open record: a 100k x 100k demo job beside an analyzed 1M x 1M one passed the
    30 s statement timeout; with hash joins it took 0.3 s."""
    cursor.execute(
        "SELECT current_setting('enable_mergejoin'), current_setting('enable_nestloop'),"
        " set_config('enable_mergejoin', 'off', true), set_config('enable_nestloop', 'off', true)"
    )
    mergejoin, nestloop = cursor.fetchone()[:2]
    yield
    cursor.execute(
        "SELECT set_config('enable_mergejoin', %s, true), set_config('enable_nestloop', %s, true)",
        [mergejoin, nestloop],
    )


def record_exceptions(ctx: MatchingContext) -> None:
    """Close the exceptions of records matched now; open one, with its reason, for every record
    still open that has none."""
    execution = ctx.execution
    index_working_set_windows(ctx)
    with connection.cursor() as cursor:
        set_match_work_mem(cursor)
        cursor.execute(
            CLOSE_MATCHED_EXCEPTIONS_SQL,
            {"execution": execution.pk, "tenant": execution.tenant_id, "job": execution.job_id},
        )
        with hash_joins_only(cursor):
            cursor.execute(
                f"""
            INSERT INTO reconciliation_unmatched
                (created_at, tenant_id, job_id, execution_id, record_id, side, amount, reason, resolution)
            SELECT now(), %(tenant)s, %(job)s, %(execution)s, id, side, amount, reason, ''
            FROM ({_open_records_with_reason_sql(ctx, without_open_exception=True)}) open_with_reason
            """,
                {"execution": execution.pk, "job": execution.job_id, "tenant": execution.tenant_id},
            )


def open_reasons_preview(ctx: MatchingContext) -> dict[str, int]:
    """Open records by the reason record_exceptions would file (dry runs)."""
    index_working_set_windows(ctx)
    with connection.cursor() as cursor:
        with hash_joins_only(cursor):
            cursor.execute(
                f"""
            SELECT reason, count(*)
            FROM ({_open_records_with_reason_sql(ctx, without_open_exception=False)}) open_with_reason
            GROUP BY reason ORDER BY reason
            """,
                {"job": ctx.execution.job_id},
            )
            reasons = dict(cursor.fetchall())
        return reasons
