"""People's review of the matcher's work: confirm, reject or unmatch a match, match records by
hand, resolve an exception. Every function is atomic and recorded in ActivityLog."""

from django.db import connection, transaction
from django.db.models.functions import Now
from django.utils import timezone

from project.activity import activity_record
from reconciliation.errors import (
    ExceptionNotFound,
    MatchNotFound,
    NotReviewable,
    ReconciliationError,
    RecordsNotFound,
    RecordsNotOpen,
)
from reconciliation.models import Match, MatchedRecord, ReconciliationException, Record
from reconciliation.review import counts
from reconciliation.review.counts import review_count
from reconciliation.workflow.signoff import ensure_records_writable  # signed-off periods are read-only

CATEGORY = "reconciliation"


def _locked_match(match_id: int, tenant_ids) -> Match:
    match = Match.objects.select_for_update().filter(id=match_id, tenant_id__in=tenant_ids).first()
    if match is None:
        raise MatchNotFound(f"No match {match_id}.")
    return match


def _review(match: Match, *, status: str, user, note: str) -> None:
    Match.objects.filter(id=match.id, matched_at=match.matched_at).update(
        status=status, reviewed_by_id=getattr(user, "pk", None), reviewed_at=Now(), note=note
    )


def _release_records(match: Match) -> None:
    MatchedRecord.objects.filter(record_id__in=[*match.left_ids, *match.right_ids], match_id=match.id).delete()


def _decide(match_id: int, tenant_ids, *, user, note: str, action: str, allowed: tuple, status: str) -> Match:
    """Lock the match, check its state, record the decision (and, unless confirming, reopen its
    records into the exceptions queue), audit it."""
    match = _locked_match(match_id, tenant_ids)
    ensure_records_writable([*match.left_ids, *match.right_ids], what="A record of this match")
    if match.status not in allowed:
        raise NotReviewable(f"Match {match_id} is {match.status}; {action} needs one that is {' or '.join(allowed)}.")
    _review(match, status=status, user=user, note=note)
    review_count(match.execution_id, _REVIEW_COUNTER[action])
    if status == Match.Status.REJECTED:
        _release_records(match)
        _open_exceptions(match, reason=ReconciliationException.Reason.REJECTED)
    activity_record(
        category=CATEGORY,
        action=action,
        user=user,
        entity_type="reconciliation.match",
        entity_id=match_id,
        metadata={"job_id": match.job_id, "was": match.status},
        tenant_id=match.tenant_id,
    )
    return Match.objects.get(id=match_id)


UNDECIDED = (Match.Status.SUGGESTED, Match.Status.AUTO)
_REVIEW_COUNTER = {"match_confirm": counts.CONFIRMED, "match_reject": counts.REJECTED,
                   "match_unmatch": counts.UNMATCHED}  # fmt: skip


@transaction.atomic
def match_confirm(*, match_id: int, tenant_ids, user=None, note: str = "") -> Match:
    return _decide(match_id, tenant_ids, user=user, note=note, action="match_confirm", allowed=UNDECIDED,
                   status=Match.Status.CONFIRMED)  # fmt: skip


@transaction.atomic
def match_reject(*, match_id: int, tenant_ids, user=None, note: str = "") -> Match:
    """A person says these records do not belong together: the match is kept as rejected (it
    counts in the accuracy figures), its records reopen and enter the exceptions queue."""
    return _decide(match_id, tenant_ids, user=user, note=note, action="match_reject", allowed=UNDECIDED,
                   status=Match.Status.REJECTED)  # fmt: skip


@transaction.atomic
def match_unmatch(*, match_id: int, tenant_ids, user=None, note: str = "") -> Match:
    """Undo a live match, confirmed ones included: a rejection of a match already accepted."""
    return _decide(match_id, tenant_ids, user=user, note=note or "unmatched", action="match_unmatch",
                   allowed=(*UNDECIDED, Match.Status.CONFIRMED), status=Match.Status.REJECTED)  # fmt: skip


def _open_exceptions(match: Match, *, reason: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO reconciliation_unmatched
                (created_at, tenant_id, job_id, execution_id, record_id, side, amount, reason, resolution)
            SELECT now(), r.tenant_id, r.job_id, %s, r.id, r.side, r.amount, %s, ''
            FROM reconciliation_record r
            WHERE r.id = ANY (%s) AND NOT EXISTS (
                SELECT 1 FROM reconciliation_unmatched u WHERE u.record_id = r.id AND u.resolved_at IS NULL)
            """,
            [match.execution_id, reason, list(match.left_ids) + list(match.right_ids)],
        )


@transaction.atomic
def match_manual(*, left_ids: list[int], right_ids: list[int], tenant_ids, user=None, note: str = "") -> Match:
    """A person matches open records by hand (one or more per side, same job and tenant)."""
    if not left_ids or not right_ids:
        raise ReconciliationError("Give at least one left and one right record.")
    ids = sorted(set(left_ids) | set(right_ids))
    records = {
        record.pk: record
        for record in Record.objects.select_for_update().filter(pk__in=ids, tenant_id__in=tenant_ids).order_by("pk")
    }
    missing = [record_id for record_id in ids if record_id not in records]
    if missing:
        raise RecordsNotFound(f"No records {missing}.")
    ensure_records_writable(ids)
    jobs = {record.job_id for record in records.values()}
    if len(jobs) != 1:
        raise ReconciliationError("All records of a match must belong to one job.")
    wrong_side = [i for i in left_ids if records[i].side != "left"] + [
        i for i in right_ids if records[i].side != "right"
    ]
    if wrong_side:
        raise ReconciliationError(f"Records on the wrong side: {wrong_side}.")
    # The records are locked; a matcher pass that wants one of them meanwhile is redone.
    not_open = sorted(MatchedRecord.objects.filter(record_id__in=ids).values_list("record_id", flat=True))
    if not_open:
        raise RecordsNotOpen(not_open)
    first = records[ids[0]]
    match = Match.objects.create(
        tenant_id=first.tenant_id,
        job_id=first.job_id,
        execution_id=None,
        pass_name=Match.Pass.MANUAL,
        status=Match.Status.CONFIRMED,
        confidence=1,
        left_ids=sorted(set(left_ids)),
        right_ids=sorted(set(right_ids)),
        left_amount=sum(records[i].amount for i in set(left_ids)),
        right_amount=sum(records[i].amount for i in set(right_ids)),
        reviewed_by_id=getattr(user, "pk", None),
        reviewed_at=timezone.now(),
        note=note,
    )
    MatchedRecord.objects.bulk_create([MatchedRecord(record_id=record_id, match_id=match.id) for record_id in ids])
    ReconciliationException.objects.filter(record_id__in=ids, resolved_at__isnull=True).update(
        resolved_at=Now(), resolved_by_id=getattr(user, "pk", None), resolution=f"matched by hand (match {match.id})"
    )
    activity_record(
        category=CATEGORY,
        action="match_manual",
        user=user,
        entity_type="reconciliation.match",
        entity_id=match.id,
        metadata={"job_id": first.job_id, "left_ids": left_ids, "right_ids": right_ids},
        tenant_id=match.tenant_id,
    )
    return match


@transaction.atomic
def exception_resolve(*, exception_id: int, tenant_ids, note: str, user=None) -> ReconciliationException:
    """Close an exception with a note (written off, booked elsewhere, ...); the record stays open."""
    if not note.strip():
        raise ReconciliationError("A resolution note is required.")
    exception = (
        ReconciliationException.objects.select_for_update().filter(id=exception_id, tenant_id__in=tenant_ids).first()
    )
    if exception is None:
        raise ExceptionNotFound(f"No exception {exception_id}.")
    if exception.resolved_at is not None:
        raise NotReviewable(f"Exception {exception_id} is already resolved.")
    ensure_records_writable([exception.record_id], what="This exception's record")
    ReconciliationException.objects.filter(id=exception.id, created_at=exception.created_at).update(
        resolved_at=Now(), resolved_by_id=getattr(user, "pk", None), resolution=note.strip()
    )
    review_count(exception.execution_id, counts.EXCEPTIONS_RESOLVED)
    activity_record(
        category=CATEGORY,
        # The audit trail's names predate the model's rename; readers filter on them.
        action="unmatched_resolve",
        user=user,
        entity_type="reconciliation.unmatched",
        entity_id=exception_id,
        metadata={"record_id": exception.record_id, "note": note.strip()[:500]},
        tenant_id=exception.tenant_id,
    )
    return ReconciliationException.objects.get(id=exception_id)
