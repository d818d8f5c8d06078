"""After the passes, the exceptions' statements keep their plans whatever the statistics say: the
one that files the reasons hashes every join, the one that closes matched records' exceptions
probes MatchedRecord once per open exception.

A fresh upload is matched before autovacuum has analyzed it: its open records can look like one
row to the planner, which then walks the job's records once per open record (a 100k x 100k job
beside an analyzed 1M x 1M one passed the 30 s statement timeout). Test tables are tiny and
never analyzed, which is the same situation: the plan the planner picks for them is the one a
fresh job gets.
"""

from contextlib import nullcontext

import pytest
from django.db import connection

from reconciliation.engine import reasons
from reconciliation.engine.passes import index_working_set_windows, load_working_set
from reconciliation.engine.run import _context
from reconciliation.models import Execution
from tests.reconciliation.factories import JobFactory, load

pytestmark = pytest.mark.django_db


def reasons_plan(job, *, hash_joins: bool) -> str:
    execution = Execution.objects.create(tenant_id=job.tenant_id, job=job)
    ctx = _context(execution)
    load_working_set(ctx)
    index_working_set_windows(ctx)
    sql = reasons._open_records_with_reason_sql(ctx, without_open_exception=True)
    with connection.cursor() as cursor, reasons.hash_joins_only(cursor) if hash_joins else nullcontext():
        cursor.execute(f"EXPLAIN {sql}", {"job": job.pk})
        return "\n".join(row[0] for row in cursor.fetchall())


def a_job_with_open_records():
    """20 open records a side, in a database whose analyzed exceptions are another job's, many:
    the planner takes the new job's open records for ones that have an exception already."""
    other = JobFactory()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO reconciliation_unmatched
                (created_at, tenant_id, job_id, execution_id, record_id, side, amount, reason, resolution)
            SELECT now(), %s, %s, NULL, n, 'left', 1, 'no_candidate', '' FROM generate_series(1, 20000) n
            """,
            [other.tenant_id, other.pk],
        )
        cursor.execute("ANALYZE reconciliation_unmatched")
    job = JobFactory()
    load(job, "left", [(f"L{n}", f"{100 + n}.00", "EUR", "2026-03-10", f"INV-{n}", "Acme") for n in range(20)])
    load(job, "right", [(f"R{n}", f"{500 + n}.00", "EUR", "2026-03-10", f"INV-{n}", "Acme") for n in range(20)])
    return job


def test_the_reasons_statement_plans_no_nested_loop_and_no_merge_join():
    plan = reasons_plan(a_job_with_open_records(), hash_joins=True)

    assert "Nested Loop" not in plan and "Merge" not in plan, plan
    assert "Hash Join" in plan or "Hash Left Join" in plan, plan


def test_left_to_itself_the_planner_would_loop_over_the_records_of_an_unanalyzed_job():
    # Why hash_joins_only exists: without it, this very plan nests loops.
    plan = reasons_plan(a_job_with_open_records(), hash_joins=False)

    assert "Nested Loop" in plan, plan


def test_the_join_settings_are_back_after_the_statement():
    with connection.cursor() as cursor:
        cursor.execute("SHOW enable_nestloop")
        before = cursor.fetchone()[0]
        with reasons.hash_joins_only(cursor):
            cursor.execute("SHOW enable_nestloop")
            assert cursor.fetchone()[0] == "off"
        cursor.execute("SELECT current_setting('enable_nestloop'), current_setting('enable_mergejoin')")
        assert cursor.fetchone() == (before, "on")


def close_matched_exceptions_plan(job) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            f"EXPLAIN {reasons.CLOSE_MATCHED_EXCEPTIONS_SQL}", {"execution": 0, "tenant": job.tenant_id, "job": job.pk}
        )
        return "\n".join(row[0] for row in cursor.fetchall())


def test_closing_the_exceptions_of_matched_records_probes_matched_records_once_per_open_exception():
    # 20,000 MatchedRecord rows the statistics have not seen, as after a first big run: as a join
    # the planner walked all of them and probed every exceptions partition for each.
    job = a_job_with_open_records()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO reconciliation_matchedrecord (record_id, match_id)"
            " SELECT n, n FROM generate_series(100000001, 100020000) n"
        )

    plan = close_matched_exceptions_plan(job)

    assert "SubPlan" in plan and "reconciliation_matchedrecord_pkey" in plan, plan
    assert "Seq Scan on reconciliation_matchedrecord" not in plan, plan
