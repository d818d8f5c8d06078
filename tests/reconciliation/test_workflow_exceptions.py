"""The exceptions workflow: age buckets, assignment, resolution codes, bulk acts, filters, audit."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from project.models import ActivityLog
from reconciliation import jobs
from reconciliation.models import Execution, ReconciliationException, TenantMembership
from reconciliation.workflow.ageing import bucket_of
from tests.reconciliation.factories import JobFactory, TenantFactory, load, member

pytestmark = pytest.mark.django_db
Role = TenantMembership.Role


def exceptions_of(job, count: int) -> list[ReconciliationException]:
    """`count` open exceptions in `job` (left records nothing matches), oldest id first."""
    load(job, "left", [(f"L{i}", f"{10 + i}.00", "EUR", "2026-03-10") for i in range(count)])
    execution = Execution.objects.create(tenant_id=job.tenant_id, job=job)
    jobs.run_execution.run_now({"execution_id": execution.pk})
    return list(ReconciliationException.objects.filter(job_id=job.pk).order_by("id"))


def age(exception: ReconciliationException, days: float) -> None:
    """Pretend the exception was opened `days` ago (created_at is the partition key: same month ok)."""
    ReconciliationException.objects.filter(id=exception.id).update(created_at=timezone.now() - timedelta(days=days))


@pytest.mark.parametrize(
    ("days", "bucket"), [(0, "0-2"), (2.9, "0-2"), (3, "3-7"), (7.5, "3-7"), (8, "8-30"), (30.9, "8-30"), (31, "30+")]
)
def test_bucket_boundaries_are_whole_days(days, bucket):
    now = timezone.now()
    assert bucket_of(now - timedelta(days=days), now) == bucket


def test_the_list_shows_each_exceptions_bucket_and_filters_by_age(client_for):
    job = JobFactory()
    fresh, week, month, old = exceptions_of(job, 4)
    for exception, days in ((week, 4), (month, 10), (old, 40)):
        age(exception, days)
    client = client_for(member(job.tenant, Role.VIEWER))

    listed = client.get(reverse("recon-exception-list")).json()["results"]
    three_to_seven = client.get(reverse("recon-exception-list"), {"age": "3-7"}).json()["results"]
    over_thirty = client.get(reverse("recon-exception-list"), {"age": "30+"}).json()["results"]

    assert {row["id"]: row["age_bucket"] for row in listed} == {
        fresh.id: "0-2",
        week.id: "3-7",
        month.id: "8-30",
        old.id: "30+",
    }
    assert [row["id"] for row in three_to_seven] == [week.id]
    assert [row["id"] for row in over_thirty] == [old.id]
    assert client.get(reverse("recon-exception-list"), {"age": "ancient"}).status_code == 400


def test_ageing_analytics_counts_open_exceptions_per_bucket(client_for):
    job = JobFactory()
    first, second, third = exceptions_of(job, 3)
    age(third, 12)
    client = client_for(member(job.tenant, Role.VIEWER))

    body = client.get(reverse("recon-exception-ageing"), {"job": job.pk}).json()

    assert body["buckets"] == [
        {"bucket": "0-2", "count": 2, "amount": str(first.amount + second.amount)},
        {"bucket": "3-7", "count": 0, "amount": "0"},
        {"bucket": "8-30", "count": 1, "amount": str(third.amount)},
        {"bucket": "30+", "count": 0, "amount": "0"},
    ]


def test_assign_to_a_member_filter_by_assignee_and_refuse_a_stranger(client_for):
    job = JobFactory()
    first, second = exceptions_of(job, 2)
    operator = member(job.tenant, Role.OPERATOR)
    stranger = member(TenantFactory(), Role.ADMIN)
    client = client_for(operator)

    assigned = client.post(reverse("recon-exception-assign", kwargs={"pk": first.id}), {"assignee": operator.pk},
                           format="json")  # fmt: skip
    refused = client.post(reverse("recon-exception-assign", kwargs={"pk": second.id}), {"assignee": stranger.pk},
                          format="json")  # fmt: skip

    assert assigned.status_code == 200 and assigned.json()["assigned_to_id"] == operator.pk
    assert refused.status_code == 400
    assert ReconciliationException.objects.get(id=second.id).assigned_to_id is None
    mine = client.get(reverse("recon-exception-list"), {"assignee": operator.pk}).json()["results"]
    unassigned = client.get(reverse("recon-exception-list"), {"unassigned": "true"}).json()["results"]
    assert [row["id"] for row in mine] == [first.id]
    assert [row["id"] for row in unassigned] == [second.id]
    log = ActivityLog.objects.get(action="exception_assign")
    assert (log.metadata["ids"], log.metadata["assignee_id"]) == ([first.id], operator.pk)


def test_bulk_assign_is_one_update_and_one_audit_row(client_for):
    job = JobFactory()
    exceptions = exceptions_of(job, 30)
    operator = member(job.tenant, Role.OPERATOR)
    ids = [exception.id for exception in exceptions]
    client = client_for(operator)

    updates = CountUpdates()
    with connection.execute_wrapper(updates):
        response = client.post(reverse("recon-exception-bulk-assign"), {"ids": ids, "assignee": operator.pk},
                               format="json")  # fmt: skip

    assert response.status_code == 200, response.content
    assert response.json()["count"] == 30
    assert updates.count == 1
    assert ReconciliationException.objects.filter(id__in=ids, assigned_to_id=operator.pk).count() == 30
    assert ActivityLog.objects.filter(action="exception_assign").count() == 1


class CountUpdates:
    """Counts UPDATEs of reconciliation_unmatched sent to the database."""

    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        if "UPDATE RECONCILIATION_UNMATCHED" in sql.upper():
            self.count += 1
        return execute(sql, params, many, context)


def test_bulk_resolve_with_code_and_adjusting_amount_then_filter_by_code(client_for):
    job = JobFactory()
    first, second, _unresolved = exceptions_of(job, 3)
    operator = member(job.tenant, Role.OPERATOR)
    client = client_for(operator)

    response = client.post(
        reverse("recon-exception-bulk-resolve"),
        {"ids": [first.id, second.id], "code": "bank_error", "adjusting_amount": "-1.50", "note": "fee"},
        format="json",
    )

    assert response.status_code == 200, response.content
    resolved = ReconciliationException.objects.get(id=first.id)
    assert (resolved.resolution_code, resolved.adjusting_amount, resolved.resolution) == (
        "bank_error",
        Decimal("-1.5000"),
        "fee",
    )
    assert resolved.resolved_at is not None and resolved.resolved_by_id == operator.pk
    by_code = client.get(reverse("recon-exception-list"), {"code": "bank_error"}).json()["results"]
    assert sorted(row["id"] for row in by_code) == [first.id, second.id]
    log = ActivityLog.objects.get(action="exception_resolve")
    assert log.metadata["ids"] == [first.id, second.id]
    assert (log.metadata["code"], log.metadata["adjusting_amount"]) == ("bank_error", "-1.5000")


def test_a_bulk_act_is_all_or_nothing_and_names_the_refused_ids(client_for):
    job = JobFactory()
    first, second = exceptions_of(job, 2)
    operator = member(job.tenant, Role.OPERATOR)
    client = client_for(operator)
    client.post(reverse("recon-exception-resolve", kwargs={"pk": second.id}), {"code": "duplicate"}, format="json")

    response = client.post(
        reverse("recon-exception-bulk-resolve"), {"ids": [first.id, second.id], "code": "written_off"}, format="json"
    )

    assert response.status_code == 409
    assert str(second.id) in response.json()["error"]["message"]
    assert ReconciliationException.objects.get(id=first.id).resolved_at is None
    assert ActivityLog.objects.filter(action="exception_resolve").count() == 1  # the single one only


def test_other_needs_a_note_and_unknown_codes_are_400(client_for):
    job = JobFactory()
    (exception,) = exceptions_of(job, 1)
    client = client_for(member(job.tenant, Role.OPERATOR))
    url = reverse("recon-exception-resolve", kwargs={"pk": exception.id})

    assert client.post(url, {"code": "other"}, format="json").status_code == 400
    assert client.post(url, {"code": "lost"}, format="json").status_code == 400
    assert ReconciliationException.objects.get(id=exception.id).resolved_at is None


def test_bulk_acts_do_not_reach_another_tenants_exceptions(client_for):
    job, theirs = JobFactory(), JobFactory()
    (mine,) = exceptions_of(job, 1)
    (other,) = exceptions_of(theirs, 1)
    operator = member(job.tenant, Role.OPERATOR)

    response = client_for(operator).post(
        reverse("recon-exception-bulk-resolve"), {"ids": [mine.id, other.id], "code": "written_off"}, format="json"
    )

    assert response.status_code == 404
    assert ReconciliationException.objects.filter(id__in=[mine.id, other.id], resolved_at__isnull=False).count() == 0


def test_viewers_cannot_assign_or_resolve(client_for):
    job = JobFactory()
    (exception,) = exceptions_of(job, 1)
    viewer = member(job.tenant, Role.VIEWER)
    client = client_for(viewer)

    assign = client.post(reverse("recon-exception-assign", kwargs={"pk": exception.id}), {"assignee": viewer.pk},
                         format="json")  # fmt: skip
    bulk = client.post(reverse("recon-exception-bulk-resolve"), {"ids": [exception.id], "code": "duplicate"},
                       format="json")  # fmt: skip

    assert assign.status_code == 403
    assert bulk.status_code == 404  # no tenant where the viewer may act: the ids do not exist for them
    assert ReconciliationException.objects.get(id=exception.id).resolved_at is None


def test_exception_list_query_count_does_not_grow_with_rows(client_for, django_assert_num_queries):
    job = JobFactory()
    exceptions_of(job, 12)
    client = client_for(member(job.tenant, Role.VIEWER))
    client.get(reverse("recon-exception-list"))

    with django_assert_num_queries(4):
        response = client.get(reverse("recon-exception-list"))

    assert len(response.json()["results"]) == 12


def test_ageing_counts_only_the_callers_tenants(client_for):
    mine, theirs = JobFactory(), JobFactory()
    exceptions_of(mine, 1)
    exceptions_of(theirs, 3)
    client = client_for(member(mine.tenant, Role.VIEWER))

    buckets = client.get(reverse("recon-exception-ageing")).json()["buckets"]

    assert sum(bucket["count"] for bucket in buckets) == 1


def test_the_former_note_only_resolve_still_works_and_sets_no_code(client_for):
    job = JobFactory()
    (exception,) = exceptions_of(job, 1)
    client = client_for(member(job.tenant, Role.OPERATOR))

    response = client.post(reverse("recon-exception-resolve", kwargs={"pk": exception.id}), {"note": "booked"},
                           format="json")  # fmt: skip

    assert response.status_code == 200
    assert (response.json()["resolution"], response.json()["resolution_code"]) == ("booked", "")
