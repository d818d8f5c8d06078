"""Periods of a job, their balances, sign-off and un-signing; the read-only guard of signed-off data.

A period covers records booked from starts_on to ends_on. It can be signed off (tenant admin)
when every exception of a record booked up to its end is resolved or explicitly carried forward,
and every record booked in it went through the matcher. Signed-off data is read-only: the
services that review matches, match by hand, work exceptions or ingest records call the guards
below and refuse (409) what touches it. Carried-forward exceptions stay workable: they move on
to the next period. Un-signing needs an admin and a reason; both acts are audited.
"""

from datetime import date
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from project.activity import activity_record
from reconciliation.models import ReconciliationJob
from reconciliation.workflow.errors import InvalidWorkflowInput, OpenExceptionsRemain, PeriodSignedOff, WorkflowConflict
from reconciliation.workflow.models import CarriedForward, Period

CATEGORY = "reconciliation"
ENTITY = "reconciliation.period"
ZERO = Decimal("0")

# Signed-off periods a record lies in, unless the record's open exception was carried forward
# from that very period (then it is the next period's business).
FROZEN_RECORDS_SQL = """
    SELECT DISTINCT r.id, p.id
    FROM reconciliation_record r
    JOIN reconciliation_period p
      ON p.job_id = r.job_id AND p.status = 'signed_off' AND r.booked_on BETWEEN p.starts_on AND p.ends_on
    WHERE r.id = ANY(%s) AND NOT EXISTS (
        SELECT 1 FROM reconciliation_carriedforward c
        JOIN reconciliation_unmatched u ON u.id = c.unmatched_id AND u.resolved_at IS NULL
        WHERE c.period_id = p.id AND c.record_id = r.id)
"""


def _audit(action: str, period: Period, user, **metadata) -> None:
    activity_record(
        category=CATEGORY,
        action=action,
        user=user,
        entity_type=ENTITY,
        entity_id=period.pk,
        metadata={"job_id": period.job_id, "starts_on": str(period.starts_on), "ends_on": str(period.ends_on),
                  **metadata},
        tenant_id=period.tenant_id,
    )  # fmt: skip


# --- Guards --------------------------------------------------------------------------------------


def ensure_records_writable(record_ids: list[int], *, what: str = "A record") -> None:
    if not record_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(FROZEN_RECORDS_SQL, [list(record_ids)])
        rows = cursor.fetchall()
    if rows:
        raise PeriodSignedOff(sorted({period_id for _record, period_id in rows}), what)


def ensure_exceptions_writable(unmatched_ids: list[int]) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT record_id FROM reconciliation_unmatched WHERE id = ANY(%s)", [list(unmatched_ids)])
        record_ids = [row[0] for row in cursor.fetchall()]
    ensure_records_writable(record_ids, what="An exception's record")


def ensure_dates_writable(*, job_id: int, first: date, last: date) -> None:
    """New records booked from `first` to `last` may not land in a signed-off period."""
    periods = list(
        Period.objects.filter(
            job_id=job_id, status=Period.Status.SIGNED_OFF, starts_on__lte=last, ends_on__gte=first
        ).values_list("id", flat=True)
    )
    if periods:
        raise PeriodSignedOff(sorted(periods), f"A record booked between {first} and {last}")


def upload_guard_start(*, job_id: int) -> int | None:
    """Before the ingest's INSERT: None when the job has no signed-off period (nothing to guard),
    else the highest record id so far; the records the INSERT adds have higher ids."""
    if not Period.objects.filter(job_id=job_id, status=Period.Status.SIGNED_OFF).exists():
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) FROM reconciliation_record")  # the primary key's last entry
        return cursor.fetchone()[0]


def upload_guard_finish(*, job_id: int, before_id: int | None) -> None:
    """After the INSERT, in the ingest's transaction: a new record booked in a signed-off period
    fails the whole upload (nothing imported). Another upload's rows committed meanwhile may be
    looked at too; they were refused the same way if they fell in a signed-off period."""
    if before_id is None:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT DISTINCT p.id FROM reconciliation_record r
            JOIN reconciliation_period p
              ON p.job_id = r.job_id AND p.status = 'signed_off' AND r.booked_on BETWEEN p.starts_on AND p.ends_on
            WHERE r.id > %s AND r.job_id = %s
            """,
            [before_id, job_id],
        )
        periods = sorted(row[0] for row in cursor.fetchall())
    if periods:
        raise PeriodSignedOff(periods, "A record of this upload")


def working_set_exclude_frozen(*, job_id: int, tables: tuple[str, ...]) -> None:
    """The matcher's working set (the execution's working tables of open records) loses the records of signed-off
    periods, carried-forward open exceptions excepted: an execution neither matches them nor
    files exceptions for them. Jobs without a signed-off period pay one index probe."""
    if not Period.objects.filter(job_id=job_id, status=Period.Status.SIGNED_OFF).exists():
        return
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(
                f"""
                DELETE FROM {table} t
                USING reconciliation_period p
                WHERE p.job_id = %s AND p.status = 'signed_off' AND t.booked_on BETWEEN p.starts_on AND p.ends_on
                  AND NOT EXISTS (
                      SELECT 1 FROM reconciliation_carriedforward c
                      JOIN reconciliation_unmatched u ON u.id = c.unmatched_id AND u.resolved_at IS NULL
                      WHERE c.period_id = p.id AND c.record_id = t.id)
                """,
                [job_id],
            )


# --- Periods -------------------------------------------------------------------------------------


@transaction.atomic
def period_create(*, job: ReconciliationJob, starts_on: date, ends_on: date, user=None) -> Period:
    if ends_on < starts_on:
        raise InvalidWorkflowInput("ends_on is before starts_on.")
    ReconciliationJob.objects.select_for_update().filter(pk=job.pk).first()  # serializes overlap checks
    overlapping = Period.objects.filter(job=job, starts_on__lte=ends_on, ends_on__gte=starts_on).first()
    if overlapping is not None:
        raise WorkflowConflict(f"Period {overlapping.pk} ({overlapping.starts_on}..{overlapping.ends_on}) overlaps.")
    period = Period.objects.create(tenant_id=job.tenant_id, job=job, starts_on=starts_on, ends_on=ends_on)
    _audit("period_create", period, user)
    return period


def period_summary(period: Period) -> dict:
    """Opening and closing balance per side, the open exceptions and adjustments that explain the
    difference between the sides, and what is left unexplained (docs/reconciliation.md)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT side,
                   coalesce(sum(amount) FILTER (WHERE booked_on < %(start)s), 0),
                   coalesce(sum(amount), 0),
                   count(*) FILTER (WHERE booked_on >= %(start)s)
            FROM reconciliation_record WHERE job_id = %(job)s AND booked_on <= %(end)s
            GROUP BY side
            """,
            {"job": period.job_id, "start": period.starts_on, "end": period.ends_on},
        )
        balances = {side: (opening, closing, count) for side, opening, closing, count in cursor.fetchall()}
        cursor.execute(
            """
            SELECT u.side,
                   count(*) FILTER (WHERE u.resolved_at IS NULL),
                   coalesce(sum(u.amount) FILTER (WHERE u.resolved_at IS NULL), 0),
                   coalesce(sum(u.adjusting_amount) FILTER (WHERE u.resolved_at IS NOT NULL), 0)
            FROM reconciliation_unmatched u JOIN reconciliation_record r ON r.id = u.record_id
            WHERE u.job_id = %(job)s AND r.booked_on <= %(end)s
            GROUP BY u.side
            """,
            {"job": period.job_id, "end": period.ends_on},
        )
        exceptions = {
            side: (count, open_amount, adjusting) for side, count, open_amount, adjusting in cursor.fetchall()
        }
    sides = {}
    for side in ("left", "right"):
        opening, closing, count = balances.get(side, (ZERO, ZERO, 0))
        open_count, open_amount, adjusting = exceptions.get(side, (0, ZERO, ZERO))
        sides[side] = {
            "opening_balance": str(opening),
            "closing_balance": str(closing),
            "records_in_period": count,
            "open_exceptions": open_count,
            "open_exceptions_amount": str(open_amount),
            "adjustments": str(adjusting),
        }
    difference = Decimal(sides["left"]["closing_balance"]) - Decimal(sides["right"]["closing_balance"])
    # Left-side items explain a left surplus, right-side items a right surplus.
    explained = sum(
        (Decimal(sides[s]["open_exceptions_amount"]) + Decimal(sides[s]["adjustments"])) * (1 if s == "left" else -1)
        for s in ("left", "right")
    )
    return {
        "sides": sides,
        "difference": str(difference),
        "explained_by_open_exceptions_and_adjustments": str(explained),
        "unexplained_difference": str(difference - explained),
    }


def _blocking_items(period: Period, carry_forward_ids: set[int]) -> tuple[list[int], list[int], int]:
    """(open exception ids in scope, those not carried forward, records never run) for a sign-off."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT u.id FROM reconciliation_unmatched u JOIN reconciliation_record r ON r.id = u.record_id
            WHERE u.job_id = %s AND u.resolved_at IS NULL AND r.booked_on <= %s ORDER BY u.id
            """,
            [period.job_id, period.ends_on],
        )
        open_ids = [row[0] for row in cursor.fetchall()]
        # Open (unmatched) records of the period that no exception, open or resolved, ever covered.
        cursor.execute(
            """
            SELECT count(*) FROM reconciliation_record r
            WHERE r.job_id = %s AND r.booked_on BETWEEN %s AND %s
              AND NOT EXISTS (SELECT 1 FROM reconciliation_matchedrecord m WHERE m.record_id = r.id)
              AND NOT EXISTS (SELECT 1 FROM reconciliation_unmatched u WHERE u.record_id = r.id)
            """,
            [period.job_id, period.starts_on, period.ends_on],
        )
        unrun = cursor.fetchone()[0]
    return open_ids, [i for i in open_ids if i not in carry_forward_ids], unrun


@transaction.atomic
def period_sign_off(*, period: Period, carry_forward_ids: list[int] | None = None, user=None) -> Period:
    period = Period.objects.select_for_update().get(pk=period.pk)
    if period.status == Period.Status.SIGNED_OFF:
        raise WorkflowConflict(f"Period {period.pk} is already signed off.")
    carry = set(carry_forward_ids or [])
    open_ids, not_carried, unrun = _blocking_items(period, carry)
    unknown = sorted(carry - set(open_ids))
    if unknown:
        raise InvalidWorkflowInput(f"Not open exceptions of this period, cannot be carried forward: {unknown}.")
    if not_carried or unrun:
        raise OpenExceptionsRemain(not_carried, unrun)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO reconciliation_carriedforward (tenant_id, period_id, unmatched_id, record_id, side, amount)
            SELECT tenant_id, %s, id, record_id, side, amount FROM reconciliation_unmatched
            WHERE id = ANY(%s) AND tenant_id = %s
            """,
            [period.pk, sorted(carry), period.tenant_id],
        )
    period.status, period.signed_off_by, period.signed_off_at = Period.Status.SIGNED_OFF, user, timezone.now()
    period.summary = period_summary(period)
    period.save(update_fields=["status", "signed_off_by", "signed_off_at", "summary"])
    _audit("period_sign_off", period, user, carried_forward=sorted(carry), summary=period.summary)
    return period


@transaction.atomic
def period_unsign(*, period: Period, reason: str, user=None) -> Period:
    if not reason.strip():
        raise InvalidWorkflowInput("A reason is required to un-sign a period.")
    period = Period.objects.select_for_update().get(pk=period.pk)
    if period.status != Period.Status.SIGNED_OFF:
        raise WorkflowConflict(f"Period {period.pk} is not signed off.")
    was = {"signed_off_by": period.signed_off_by_id, "signed_off_at": period.signed_off_at.isoformat()}
    carried = sorted(CarriedForward.objects.filter(period=period).values_list("unmatched_id", flat=True))
    CarriedForward.objects.filter(period=period).delete()
    period.status, period.signed_off_by, period.signed_off_at = Period.Status.OPEN, None, None
    period.save(update_fields=["status", "signed_off_by", "signed_off_at"])
    _audit("period_unsign", period, user, reason=reason.strip()[:500], was=was, carried_forward=carried)
    return period
