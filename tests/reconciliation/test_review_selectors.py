"""The review queues' reads (reconciliation/review/selectors.py), which the admin's QueueView pages:
what each queue holds and what each filter keeps."""

from decimal import Decimal

import pytest

from reconciliation.models import Match, ReconciliationException
from reconciliation.review.selectors import exceptions_queue, review_queue
from tests.reconciliation.factories import JobFactory

pytestmark = pytest.mark.django_db


def match(job, *, status="suggested", pass_name=Match.Pass.TOLERANCE, confidence="0.80") -> Match:
    return Match.objects.create(
        tenant_id=job.tenant_id, job_id=job.pk, pass_name=pass_name, status=status, confidence=Decimal(confidence),
        left_ids=[1], right_ids=[2], left_amount=Decimal("10"), right_amount=Decimal("10.2"),
    )  # fmt: skip


def exception(job, *, reason="no_candidate", side="left", amount="10", resolved=False) -> ReconciliationException:
    return ReconciliationException.objects.create(
        tenant_id=job.tenant_id, job_id=job.pk, record_id=1, side=side, amount=Decimal(amount), reason=reason,
        resolution="done" if resolved else "", resolved_at="2026-12-01T00:00:00Z" if resolved else None,
    )  # fmt: skip


def ids(queryset) -> set[int]:
    return set(queryset.values_list("id", flat=True))


def test_the_review_queue_holds_suggested_matches_only():
    job = JobFactory()
    suggested = match(job)
    match(job, status="auto")
    match(job, status="confirmed")

    assert ids(review_queue()) == {suggested.id}


def test_review_filters_narrow_by_scope_pass_and_confidence():
    job, other_job = JobFactory(), JobFactory()
    low = match(job, confidence="0.70")
    high = match(job, confidence="0.90", pass_name="group")
    elsewhere = match(other_job)

    assert ids(review_queue(job=job.pk)) == {low.id, high.id}
    assert ids(review_queue(tenant=other_job.tenant_id)) == {elsewhere.id}
    assert ids(review_queue(pass_name="group")) == {high.id}
    assert ids(review_queue(confidence_min=Decimal("0.75"), confidence_max=Decimal("0.95"))) == {high.id, elsewhere.id}


def test_the_exceptions_queue_holds_open_exceptions_only():
    job = JobFactory()
    still_open = exception(job)
    exception(job, resolved=True)

    assert ids(exceptions_queue()) == {still_open.id}


def test_exception_filters_narrow_by_reason_side_and_amount():
    job = JobFactory()
    small_left = exception(job, amount="5")
    big_right = exception(job, side="right", amount="500", reason="ambiguous")

    assert ids(exceptions_queue(reason="ambiguous")) == {big_right.id}
    assert ids(exceptions_queue(side="left")) == {small_left.id}
    assert ids(exceptions_queue(amount_min=Decimal("10"))) == {big_right.id}
    assert ids(exceptions_queue(amount_max=Decimal("10"), job=job.pk)) == {small_left.id}
