"""The reconciliation API: tenant isolation on every endpoint, roles, ingest, runs, review, caching."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from project.models import ActivityLog, OutboxMessage
from reconciliation.engine import jobs
from reconciliation.models import (
    Execution,
    Match,
    MatchedRecord,
    ReconciliationException,
    ReconciliationJob,
    Record,
    SourceProfile,
    TenantMembership,
    WebhookDelivery,
    WebhookEndpoint,
)
from reconciliation.workflow.models import JobSchedule, Period
from tests.reconciliation.factories import JobFactory, TenantFactory, load, member

pytestmark = pytest.mark.django_db
Role = TenantMembership.Role


def run(job) -> Execution:
    execution = Execution.objects.create(tenant_id=job.tenant_id, job=job)
    jobs.run_execution.run_now({"execution_id": execution.pk})
    execution.refresh_from_db()
    return execution


def tenant_world(name: str) -> dict:
    """A tenant with one of everything: a job with records, a finished execution, a suggested
    match, an open exception, a webhook endpoint and a delivery."""
    # A high auto_threshold: the near pair below is suggested, for the review endpoints.
    job = JobFactory(tenant=TenantFactory(name=name), rules={"auto_threshold": 0.99})
    load(job, "left", [("L1", "100.00", "EUR", "2026-03-10", "", "Acme"), ("L9", "5.00", "EUR", "2026-03-10")])
    load(job, "right", [("R1", "100.40", "EUR", "2026-03-11", "", "Acme")])
    execution = run(job)
    endpoint = WebhookEndpoint.objects.create(
        tenant=job.tenant, url="https://hooks.example.com/b", secret="s", events=["execution.completed"]
    )
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint, tenant=job.tenant, event="execution.completed", payload={}
    )
    # The workflow (issue 14): the tenant's admin membership, a schedule and a period.
    admin = member(job.tenant, Role.ADMIN)
    schedule = JobSchedule.objects.create(job=job, tenant=job.tenant, crontab="0 6 * * *")
    period = Period.objects.create(job=job, tenant=job.tenant, starts_on="2026-03-01", ends_on="2026-03-31")
    return {
        "admin": admin,
        "membership": TenantMembership.objects.get(user=admin),
        "schedule": schedule,
        "period": period,
        "tenant": job.tenant,
        "job": job,
        "execution": execution,
        "match": Match.objects.get(job_id=job.pk),
        "unmatched": ReconciliationException.objects.get(job_id=job.pk),
        "record": Record.objects.filter(job=job).first(),
        "endpoint": endpoint,
        "delivery": delivery,
        "profile": SourceProfile.objects.create(
            tenant=job.tenant, name="Bank CSV", columns={"external_id": "id", "amount": "amt", "booked_on": "day"}
        ),
    }


@pytest.fixture
def tenant_b_world():
    return tenant_world("B")


# Every object endpoint, as (method, url name, which object of tenant B, body).
OBJECT_ENDPOINTS = [
    ("get", "recon-job-detail", "job", None),
    ("patch", "recon-job-detail", "job", {"name": "mine now"}),
    ("get", "recon-job-records", "job", None),
    (
        "post",
        "recon-job-records",
        "job",
        [{"external_id": "X", "amount": "1", "currency": "EUR", "booked_on": "2026-01-01", "side": "left"}],
    ),
    ("post", "recon-job-run", "job", {}),
    ("get", "recon-execution-detail", "execution", None),
    ("post", "recon-execution-cancel", "execution", None),
    ("get", "recon-execution-report", "execution", None),
    ("get", "reconciliation-summary", "execution", None),
    ("get", "recon-match-detail", "match", None),
    ("post", "recon-match-confirm", "match", {}),
    ("post", "recon-match-reject", "match", {}),
    ("post", "recon-match-unmatch", "match", {}),
    ("get", "recon-exception-detail", "unmatched", None),
    ("post", "recon-exception-resolve", "unmatched", {"note": "written off"}),
    ("get", "recon-webhook-endpoint-detail", "endpoint", None),
    ("patch", "recon-webhook-endpoint-detail", "endpoint", {"is_active": False}),
    ("get", "recon-webhook-delivery-detail", "delivery", None),
    ("post", "recon-webhook-delivery-redeliver", "delivery", None),
    # Bank statements, source profiles, exports (issue 14).
    ("post", "recon-statement-upload", "job", None),
    ("get", "recon-export-execution", "execution", None),
    ("get", "recon-source-profile-detail", "profile", None),
    ("patch", "recon-source-profile-detail", "profile", {"name": "mine now"}),
    ("delete", "recon-source-profile-detail", "profile", None),
    # The workflow (issue 14).
    ("post", "recon-exception-assign", "unmatched", {"assignee": None}),
    ("post", "recon-exception-resolve", "unmatched", {"code": "written_off", "adjusting_amount": "1"}),
    ("get", "recon-member-detail", "membership", None),
    ("patch", "recon-member-detail", "membership", {"role": "viewer"}),
    ("delete", "recon-member-detail", "membership", None),
    ("get", "recon-schedule-detail", "schedule", None),
    ("patch", "recon-schedule-detail", "schedule", {"crontab": "* * * * *"}),
    ("delete", "recon-schedule-detail", "schedule", None),
    ("get", "recon-schedule-runs", "schedule", None),
    ("get", "recon-period-detail", "period", None),
    ("get", "recon-period-summary", "period", None),
    ("post", "recon-period-sign-off", "period", {"carry_forward": []}),
    ("post", "recon-period-unsign", "period", {"reason": "not yours"}),
]

# Every list endpoint, and which object of a tenant's world it lists.
LIST_ENDPOINTS = [
    ("recon-tenant-list", "tenant"),
    ("recon-job-list", "job"),
    ("recon-execution-list", "execution"),
    ("recon-match-list", "match"),
    ("recon-exception-list", "unmatched"),
    ("recon-webhook-endpoint-list", "endpoint"),
    ("recon-webhook-delivery-list", "delivery"),
    ("recon-source-profile-list", "profile"),
    ("recon-member-list", "membership"),
    ("recon-schedule-list", "schedule"),
    ("recon-period-list", "period"),
]


@pytest.mark.parametrize(("method", "name", "target", "body"), OBJECT_ENDPOINTS)
def test_a_member_of_tenant_a_gets_404_for_every_object_of_tenant_b(
    method, name, target, body, tenant_b_world, client_for
):
    admin_of_a = member(TenantFactory(name="A"), Role.ADMIN)
    obj = tenant_b_world[target]
    url = reverse(name, kwargs={"pk": obj.id})
    before = type(obj).objects.filter(id=obj.id).values().get()

    response = getattr(client_for(admin_of_a), method)(url, body, format="json")

    assert response.status_code == 404, response.content
    assert type(obj).objects.filter(id=obj.id).values().get() == before
    assert Record.objects.filter(job=tenant_b_world["job"]).count() == 3
    assert Execution.objects.filter(job=tenant_b_world["job"]).count() == 1


@pytest.mark.parametrize(("name", "kind"), LIST_ENDPOINTS)
def test_lists_show_exactly_the_own_tenants_rows(name, kind, tenant_b_world, client_for):
    world_a = tenant_world("A")
    client = client_for(world_a["admin"])

    response = client.get(reverse(name))

    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [world_a[kind].id]


def test_a_manual_match_with_another_tenants_record_is_404(tenant_b_world, client_for):
    tenant_a = TenantFactory()
    job = JobFactory(tenant=tenant_a)
    load(job, "left", [("A1", "1.00", "EUR", "2026-03-10")])
    client = client_for(member(tenant_a, Role.OPERATOR))
    own = Record.objects.get(job=job)

    response = client.post(
        reverse("recon-match-list"), {"left_ids": [own.pk], "right_ids": [tenant_b_world["record"].pk]}, format="json"
    )

    assert response.status_code == 404
    assert not MatchedRecord.objects.filter(record_id=own.pk).exists()


def test_anonymous_and_users_without_a_tenant_are_refused(client, client_for):
    assert client.get(reverse("recon-job-list")).status_code in (401, 403)
    assert (
        client_for(member(TenantFactory()).__class__.objects.create(username="loner"))
        .get(reverse("recon-job-list"))
        .status_code
        == 403
    )


def test_viewers_read_but_cannot_run_ingest_or_review(tenant_b_world, client_for):
    viewer = member(tenant_b_world["job"].tenant, Role.VIEWER)
    client = client_for(viewer)
    job, match = tenant_b_world["job"], tenant_b_world["match"]

    assert client.get(reverse("recon-job-detail", kwargs={"pk": job.pk})).status_code == 200
    assert client.get(reverse("recon-job-records", kwargs={"pk": job.pk})).status_code == 200
    assert client.post(reverse("recon-job-run", kwargs={"pk": job.pk}), {}, format="json").status_code == 403
    assert client.post(reverse("recon-match-confirm", kwargs={"pk": match.id}), {}, format="json").status_code == 403
    assert client.post(reverse("recon-job-records", kwargs={"pk": job.pk}), [], format="json").status_code == 403


def test_only_tenant_admins_create_jobs_and_rules_are_validated_with_their_path(client_for):
    tenant = TenantFactory()
    operator, admin = member(tenant, Role.OPERATOR), member(tenant, Role.ADMIN)
    body = {"tenant": tenant.pk, "name": "Bank", "rules": {"passes": {"tolerance": {"amount_pct": 99}}}}

    # A member without the admin role is forbidden (issue 9, defect 7), not told the body is wrong.
    assert client_for(operator).post(reverse("recon-job-list"), body, format="json").status_code == 403
    response = client_for(admin).post(reverse("recon-job-list"), body, format="json")

    assert response.status_code == 400
    assert "passes.tolerance.amount_pct" in response.json()["error"]["fields"]["rules"][0]
    body["rules"] = {"auto_threshold": 0.95}
    created = client_for(admin).post(reverse("recon-job-list"), body, format="json")
    assert created.status_code == 201
    assert ReconciliationJob.objects.get(pk=created.json()["id"]).rules == {"auto_threshold": 0.95}


def test_job_list_is_cached_and_a_change_drops_the_cache(
    client_for, django_assert_num_queries, django_capture_on_commit_callbacks
):
    tenant = TenantFactory()
    admin = member(tenant, Role.ADMIN)
    JobFactory(tenant=tenant, name="first")
    client = client_for(admin)
    assert [job["name"] for job in client.get(reverse("recon-job-list")).json()["results"]] == ["first"]

    with django_assert_num_queries(3):  # session, user, memberships: the list itself is cached
        client.get(reverse("recon-job-list"))
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("recon-job-list"), {"tenant": tenant.pk, "name": "second"}, format="json")

    assert [job["name"] for job in client.get(reverse("recon-job-list")).json()["results"]] == ["second", "first"]


@pytest.mark.parametrize("page_size", [1, 50])
def test_match_list_runs_a_constant_number_of_queries(page_size, client_for, django_assert_num_queries):
    tenant = TenantFactory()
    job = JobFactory(tenant=tenant)
    load(job, "left", [(f"L{i}", f"{i}.00", "EUR", "2026-03-10", f"R{i}") for i in range(1, 61)])
    load(job, "right", [(f"R{i}", f"{i}.00", "EUR", "2026-03-10", f"R{i}") for i in range(1, 61)])
    run(job)
    client = client_for(member(tenant, Role.VIEWER))

    with django_assert_num_queries(4):  # session, user, memberships, the page
        response = client.get(reverse("recon-match-list"), {"page_size": page_size, "status": "auto"})
    assert len(response.json()["results"]) == page_size


def test_match_filters_by_confidence_and_amount(client_for):
    tenant = TenantFactory()
    job = JobFactory(tenant=tenant)
    load(job, "left", [("L1", "10.00", "EUR", "2026-03-10", "A"), ("L2", "500.00", "EUR", "2026-03-10", "B")])
    load(job, "right", [("R1", "10.00", "EUR", "2026-03-10", "A"), ("R2", "500.00", "EUR", "2026-03-10", "B")])
    run(job)
    client = client_for(member(tenant, Role.VIEWER))

    response = client.get(
        reverse("recon-match-list"), {"amount_min": "100", "confidence_min": "0.99", "pass_name": "exact"}
    )

    assert [row["left_amount"] for row in response.json()["results"]] == ["500.0000"]
    assert client.get(reverse("recon-match-list"), {"confidence_min": "high"}).status_code == 400


def test_csv_upload_then_run_then_poll_the_summary(client_for):
    tenant = TenantFactory()
    job = JobFactory(tenant=tenant)
    client = client_for(member(tenant, Role.OPERATOR))
    csv_body = b"external_id,amount,currency,booked_on,reference\nL1,10.00,EUR,2026-03-10,A\n"

    uploaded = client.post(
        reverse("recon-job-records", kwargs={"pk": job.pk}) + "?side=left", csv_body, content_type="text/csv"
    )
    again = client.post(
        reverse("recon-job-records", kwargs={"pk": job.pk}) + "?side=left", csv_body, content_type="text/csv"
    )
    multipart = client.post(
        reverse("recon-job-records", kwargs={"pk": job.pk}) + "?side=right",
        {"file": SimpleUploadedFile("ledger.csv", csv_body.replace(b"L1", b"R1"), content_type="text/csv")},
        format="multipart",
    )
    started = client.post(reverse("recon-job-run", kwargs={"pk": job.pk}), {}, format="json")
    conflict = client.post(reverse("recon-job-run", kwargs={"pk": job.pk}), {}, format="json")

    assert (uploaded.status_code, uploaded.json()["inserted"]) == (201, 1)
    assert (again.status_code, again.json()["inserted"], again.json()["unchanged"]) == (200, 0, 1)
    assert multipart.status_code == 201
    assert started.status_code == 202 and started.json()["status"] == "queued"
    assert conflict.status_code == 409
    execution_id = started.json()["id"]
    assert list(OutboxMessage.objects.values_list("job", "kwargs")) == [
        ("reconciliation.run_execution", {"execution_id": execution_id})
    ]

    jobs.run_execution.run_now({"execution_id": execution_id})
    summary = client.get(reverse("reconciliation-summary", kwargs={"pk": execution_id}))

    assert summary.status_code == 200
    assert summary.json()["status"] == "succeeded"
    assert summary.json()["summary"]["match_rate"] == 1.0
    assert summary["ETag"]
    assert (
        client.get(
            reverse("reconciliation-summary", kwargs={"pk": execution_id}), HTTP_IF_NONE_MATCH=summary["ETag"]
        ).status_code
        == 304
    )


def test_a_bad_upload_is_a_400_listing_rows_and_imports_nothing(client_for):
    tenant = TenantFactory()
    job = JobFactory(tenant=tenant)
    client = client_for(member(tenant, Role.OPERATOR))
    body = b"external_id,amount,currency,booked_on\nL1,10.00,EUR,2026-03-10\nL2,ten,EUR,2026-13-01\n"

    response = client.post(
        reverse("recon-job-records", kwargs={"pk": job.pk}) + "?side=left", body, content_type="text/csv"
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_upload"
    assert error["bad_rows"] == 1
    assert error["rows"] == [
        {
            "row": 2,
            "errors": [
                "amount: must be a decimal number with at most 14 digits before and 4 after the point",
                "booked_on: must be a date written YYYY-MM-DD",
            ],
        }
    ]
    assert not Record.objects.filter(job=job).exists()

    skipped = client.post(
        reverse("recon-job-records", kwargs={"pk": job.pk}) + "?side=left&on_error=skip", body, content_type="text/csv"
    )
    assert (skipped.status_code, skipped.json()["inserted"], skipped.json()["rejected"]) == (201, 1, 1)


def test_review_actions_change_state_and_are_audited(tenant_b_world, client_for):
    operator = member(tenant_b_world["job"].tenant, Role.OPERATOR)
    client = client_for(operator)
    match, unmatched = tenant_b_world["match"], tenant_b_world["unmatched"]
    assert match.status == "suggested"

    rejected = client.post(
        reverse("recon-match-reject", kwargs={"pk": match.id}), {"note": "different invoice"}, format="json"
    )
    again = client.post(reverse("recon-match-confirm", kwargs={"pk": match.id}), {}, format="json")
    left, right = match.left_ids[0], match.right_ids[0]
    manual = client.post(reverse("recon-match-list"), {"left_ids": [left], "right_ids": [right]}, format="json")
    resolved = client.post(
        reverse("recon-exception-resolve", kwargs={"pk": unmatched.id}), {"note": "fee"}, format="json"
    )

    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert again.status_code == 409
    assert manual.status_code == 201 and manual.json()["pass_name"] == "manual"
    assert resolved.status_code == 200 and resolved.json()["resolution"] == "fee"
    assert MatchedRecord.objects.get(record_id=left).match_id == manual.json()["id"]
    actions = set(ActivityLog.objects.filter(user=operator).values_list("action", flat=True))
    assert {"match_reject", "match_manual", "unmatched_resolve"} <= actions


def test_execution_report_streams_matches_and_exceptions_as_csv(tenant_b_world, client_for):
    client = client_for(member(tenant_b_world["job"].tenant, Role.VIEWER))
    execution = tenant_b_world["execution"]

    response = client.get(reverse("recon-execution-report", kwargs={"pk": execution.pk}))

    lines = b"".join(response.streaming_content).decode().splitlines()
    assert lines[0] == "kind,id,detail,status,confidence,left_ids,right_ids,amount,at"
    assert [line.split(",")[0] for line in lines[1:]] == ["match", "exception"]
