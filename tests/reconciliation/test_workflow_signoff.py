"""Periods: balances per side, sign-off (no open exception unless carried forward), read-only
signed-off data, and un-signing by an admin with a reason."""

import pytest
from django.urls import reverse

from project.models import ActivityLog
from reconciliation import jobs
from reconciliation.models import Execution, Match, MatchedRecord, ReconciliationException, TenantMembership
from reconciliation.workflow.models import CarriedForward, Period
from tests.reconciliation.factories import JobFactory, load, member

pytestmark = pytest.mark.django_db
Role = TenantMembership.Role


def run(job) -> None:
    execution = Execution.objects.create(tenant_id=job.tenant_id, job=job)
    jobs.run_execution.run_now({"execution_id": execution.pk})


@pytest.fixture
def march():
    """A job with February history and a March: 100 matches 100 (same reference: a match needs
    evidence beyond the amount), a bank fee of -5 on the left and a ledger entry of 40 on the
    right have no partner (two open exceptions)."""
    job = JobFactory(rules={"auto_threshold": 0.5})
    load(job, "left", [("L0", "1000.00", "EUR", "2026-02-20", "INV-1000"),
                       ("L1", "100.00", "EUR", "2026-03-10", "INV-1001"),
                       ("FEE", "-5.00", "EUR", "2026-03-31")])  # fmt: skip
    load(job, "right", [("R0", "1000.00", "EUR", "2026-02-20", "INV-1000"),
                        ("R1", "100.00", "EUR", "2026-03-10", "INV-1001"),
                        ("R9", "40.00", "EUR", "2026-03-15")])  # fmt: skip
    run(job)
    admin = member(job.tenant, Role.ADMIN)
    period = Period.objects.create(tenant=job.tenant, job=job, starts_on="2026-03-01", ends_on="2026-03-31")
    return {"job": job, "admin": admin, "period": period}


def exception(job, external_id: str) -> ReconciliationException:
    return ReconciliationException.objects.get(job_id=job.pk, record_id=job.records.get(external_id=external_id).pk)


def test_summary_shows_balances_per_side_and_the_unexplained_difference(march, client_for):
    client = client_for(march["admin"])

    body = client.get(reverse("recon-period-summary", kwargs={"pk": march["period"].pk})).json()["summary"]

    assert body["sides"]["left"]["opening_balance"] == "1000.0000"
    assert body["sides"]["left"]["closing_balance"] == "1095.0000"
    assert body["sides"]["right"]["opening_balance"] == "1000.0000"
    assert body["sides"]["right"]["closing_balance"] == "1140.0000"
    assert (body["difference"], body["unexplained_difference"]) == ("-45.0000", "0.0000")  # both items open


def test_a_resolution_explains_only_its_adjusting_amount(march, client_for):
    client = client_for(march["admin"])
    fee, ledger = exception(march["job"], "FEE"), exception(march["job"], "R9")
    client.post(reverse("recon-exception-resolve", kwargs={"pk": fee.id}),
                {"code": "bank_error", "adjusting_amount": "-5.00"}, format="json")  # fmt: skip
    client.post(reverse("recon-exception-resolve", kwargs={"pk": ledger.id}), {"code": "written_off"}, format="json")

    body = client.get(reverse("recon-period-summary", kwargs={"pk": march["period"].pk})).json()["summary"]

    assert body["sides"]["left"]["adjustments"] == "-5.0000"
    assert body["unexplained_difference"] == "-40.0000"  # the written-off 40 has no adjusting entry


def test_sign_off_is_refused_while_an_exception_is_open_and_not_carried_forward(march, client_for):
    client = client_for(march["admin"])
    url = reverse("recon-period-sign-off", kwargs={"pk": march["period"].pk})
    fee, ledger = exception(march["job"], "FEE"), exception(march["job"], "R9")

    refused = client.post(url, {"carry_forward": [ledger.id]}, format="json")
    signed = client.post(url, {"carry_forward": [fee.id, ledger.id]}, format="json")

    assert refused.status_code == 409
    assert str(fee.id) in refused.json()["error"]["message"]
    assert signed.status_code == 200, signed.content
    period = Period.objects.get(pk=march["period"].pk)
    assert (period.status, period.signed_off_by_id) == ("signed_off", march["admin"].pk)
    assert period.summary["unexplained_difference"] == "0.0000"
    assert sorted(CarriedForward.objects.filter(period=period).values_list("unmatched_id", flat=True)) == sorted(
        [fee.id, ledger.id]
    )
    log = ActivityLog.objects.get(action="period_sign_off")
    assert sorted(log.metadata["carried_forward"]) == sorted([fee.id, ledger.id])


def test_records_never_run_through_the_matcher_block_the_sign_off(march, client_for):
    load(march["job"], "left", [("LATE", "7.00", "EUR", "2026-03-30")])
    fee, ledger = exception(march["job"], "FEE"), exception(march["job"], "R9")

    response = client_for(march["admin"]).post(
        reverse("recon-period-sign-off", kwargs={"pk": march["period"].pk}),
        {"carry_forward": [fee.id, ledger.id]},
        format="json",
    )

    assert response.status_code == 409
    assert "never run through the matcher" in response.json()["error"]["message"]


def test_only_admins_sign_off_and_un_sign(march, client_for):
    operator = member(march["job"].tenant, Role.OPERATOR)
    period = march["period"]
    client = client_for(operator)

    assert client.post(reverse("recon-period-sign-off", kwargs={"pk": period.pk}), {}, format="json").status_code == 403
    Period.objects.filter(pk=period.pk).update(status="signed_off")
    unsign = client.post(reverse("recon-period-unsign", kwargs={"pk": period.pk}), {"reason": "x"}, format="json")
    assert unsign.status_code == 403
    assert Period.objects.get(pk=period.pk).status == "signed_off"


def sign_off_carrying_only(march, client_for, external_id: str) -> ReconciliationException:
    """Resolve every open exception but `external_id`'s, carry that one forward, sign off."""
    client = client_for(march["admin"])
    carried = exception(march["job"], external_id)
    for other in ReconciliationException.objects.filter(job_id=march["job"].pk, resolved_at__isnull=True).exclude(
        id=carried.id
    ):
        client.post(reverse("recon-exception-resolve", kwargs={"pk": other.id}), {"code": "duplicate"}, format="json")
    response = client.post(
        reverse("recon-period-sign-off", kwargs={"pk": march["period"].pk}), {"carry_forward": [carried.id]},
        format="json",
    )  # fmt: skip
    assert response.status_code == 200, response.content
    return carried


def test_signed_off_data_is_read_only_but_carried_forward_exceptions_are_worked(march, client_for):
    carried = sign_off_carrying_only(march, client_for, "R9")
    client = client_for(march["admin"])
    resolved_fee = exception(march["job"], "FEE")
    match = Match.objects.get(
        job_id=march["job"].pk, left_ids__contains=[march["job"].records.get(external_id="L1").pk]
    )

    unmatch = client.post(reverse("recon-match-unmatch", kwargs={"pk": match.id}), {}, format="json")
    new_record = client.post(
        reverse("recon-job-records", kwargs={"pk": march["job"].pk}),
        [{"external_id": "X", "amount": "1", "currency": "EUR", "booked_on": "2026-03-05", "side": "left"}],
        format="json",
    )
    work_carried = client.post(reverse("recon-exception-assign", kwargs={"pk": carried.id}),
                               {"assignee": march["admin"].pk}, format="json")  # fmt: skip

    assert unmatch.status_code == 409
    assert "signed-off" in unmatch.json()["error"]["message"]
    assert Match.objects.get(id=match.id).status != "rejected"
    assert new_record.status_code == 409
    assert not march["job"].records.filter(external_id="X").exists()
    assert work_carried.status_code == 200
    assert resolved_fee.resolved_at is not None


def test_an_admin_un_signs_with_a_reason_and_it_is_audited(march, client_for):
    sign_off_carrying_only(march, client_for, "R9")
    client = client_for(march["admin"])
    url = reverse("recon-period-unsign", kwargs={"pk": march["period"].pk})

    without_reason = client.post(url, {}, format="json")
    unsigned = client.post(url, {"reason": "the bank re-sent March"}, format="json")

    assert without_reason.status_code == 400
    assert unsigned.status_code == 200 and unsigned.json()["status"] == "open"
    assert not CarriedForward.objects.filter(period=march["period"]).exists()
    log = ActivityLog.objects.get(action="period_unsign")
    assert (log.user_id, log.metadata["reason"]) == (march["admin"].pk, "the bank re-sent March")
    assert log.metadata["was"]["signed_off_by"] == march["admin"].pk


def test_periods_of_a_job_cannot_overlap(march, client_for):
    client = client_for(march["admin"])

    overlapping = client.post(reverse("recon-period-list"),
                              {"job": march["job"].pk, "starts_on": "2026-03-15", "ends_on": "2026-04-14"},
                              format="json")  # fmt: skip
    backwards = client.post(reverse("recon-period-list"),
                            {"job": march["job"].pk, "starts_on": "2026-05-02", "ends_on": "2026-05-01"},
                            format="json")  # fmt: skip
    april = client.post(reverse("recon-period-list"),
                        {"job": march["job"].pk, "starts_on": "2026-04-01", "ends_on": "2026-04-30"},
                        format="json")  # fmt: skip

    assert (overlapping.status_code, backwards.status_code, april.status_code) == (409, 400, 201)
    assert ActivityLog.objects.filter(action="period_create").count() == 1


def test_the_matcher_leaves_signed_off_records_alone(march, client_for):
    sign_off_carrying_only(march, client_for, "R9")  # FEE (-5.00 on 31 March) resolved as duplicate
    job = march["job"]
    load(job, "right", [("FEE-BOOKED", "-5.00", "EUR", "2026-04-01")])  # a perfect partner, in April

    run(job)

    fee = job.records.get(external_id="FEE")
    assert not MatchedRecord.objects.filter(record_id=fee.pk).exists()
    assert not ReconciliationException.objects.filter(record_id=fee.pk, resolved_at__isnull=True).exists()
    booked = job.records.get(external_id="FEE-BOOKED")
    assert ReconciliationException.objects.filter(record_id=booked.pk, resolved_at__isnull=True).exists()
