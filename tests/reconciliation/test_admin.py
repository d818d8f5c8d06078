"""The reconciliation admin: an operator runs a job, reviews suggested matches and resolves
exceptions — every page permission-checked, every action through the services and audited, no
query count that grows with the rows shown."""

import html
import re
from unittest import mock

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from project.models import ActivityLog, OutboxMessage
from reconciliation.admin.common import MAX_CANDIDATES
from reconciliation.engine import jobs
from reconciliation.engine.rules import parse_rules
from reconciliation.models import (
    Execution,
    Match,
    MatchedRecord,
    ReconciliationException,
    ReconciliationJob,
    Record,
    WebhookDelivery,
    WebhookEndpoint,
)
from reconciliation.review.selectors import exception_candidates
from tests.conftest import grant
from tests.factories import UserFactory
from tests.plans import index_scans, scan_on
from tests.reconciliation.factories import JobFactory, TenantFactory, load, member

pytestmark = pytest.mark.django_db

REVIEW = reverse("admin:reconciliation_review_queue")
EXCEPTIONS = reverse("admin:reconciliation_exceptions_queue")
VIEW = "reconciliation.view_execution"
ACT = "reconciliation.change_execution"
# A high auto threshold: a near pair (amount 0.40 apart, a day apart, same counterparty) is suggested.
REVIEW_RULES = {"auto_threshold": 0.99}


def staff(*permissions: str):
    return grant(UserFactory(is_staff=True), *permissions)


@pytest.fixture
def logged_in(client):
    def login(user):
        client.force_login(user)
        return client

    return login


def text(response) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


def run(job) -> Execution:
    execution = Execution.objects.create(tenant_id=job.tenant_id, job=job)
    jobs.run_execution.run_now({"execution_id": execution.pk})
    execution.refresh_from_db()
    return execution


def suggested_pairs(job, count: int, *, start: int = 1) -> None:
    """`count` pairs the matcher suggests (amounts far apart, so each has one candidate)."""
    numbers = range(start, start + count)
    load(job, "left", [(f"L{i}", f"{i * 1000}.00", "EUR", "2026-03-10", "", f"Vendor {i}") for i in numbers])
    load(job, "right", [(f"R{i}", f"{i * 1000}.40", "EUR", "2026-03-11", "", f"Vendor {i}") for i in numbers])


def lonely_records(job, count: int, *, start: int = 1) -> None:
    """`count` left records with nothing on the other side: each becomes a no_candidate exception."""
    load(job, "left", [(f"X{i}", f"{i}.13", "USD", "2026-03-10") for i in range(start, start + count)])


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]] if response.context else []


# --- Pages and permissions ---------------------------------------------------------------------------


@pytest.fixture
def world():
    """A job with a finished execution, a suggested match, an open exception, a webhook delivery."""
    job = JobFactory(rules=REVIEW_RULES)
    suggested_pairs(job, 1)
    lonely_records(job, 1)
    execution = run(job)
    endpoint = WebhookEndpoint.objects.create(
        tenant=job.tenant, url="https://hooks.example.com/a", secret="s", events=["execution.completed"]
    )
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint, tenant=job.tenant, event="execution.completed", payload={}, status="dead"
    )
    return {
        "job": job,
        "execution": execution,
        "match": Match.objects.get(job_id=job.pk),
        "exception": ReconciliationException.objects.get(job_id=job.pk),
        "record": Record.objects.filter(job=job).first(),
        "endpoint": endpoint,
        "delivery": delivery,
    }


def pages(world) -> list[tuple[str, str]]:
    """(url, permission that opens it) for every page of the reconciliation admin."""
    job, execution = world["job"], world["execution"]
    return [
        (reverse("admin:reconciliation_tenant_changelist"), "reconciliation.view_tenant"),
        (reverse("admin:reconciliation_tenant_change", args=[job.tenant_id]), "reconciliation.view_tenant"),
        (reverse("admin:reconciliation_reconciliationjob_changelist"), "reconciliation.view_reconciliationjob"),
        (
            reverse("admin:reconciliation_reconciliationjob_change", args=[job.pk]),
            "reconciliation.view_reconciliationjob",
        ),
        (reverse("admin:reconciliation_reconciliationjob_add"), "reconciliation.add_reconciliationjob"),
        (reverse("admin:reconciliation_execution_changelist"), VIEW),
        (reverse("admin:reconciliation_execution_change", args=[execution.pk]), VIEW),
        (REVIEW, VIEW),
        (EXCEPTIONS, VIEW),
        (reverse("admin:reconciliation_exception_detail", args=[world["exception"].id]), VIEW),
        (reverse("admin:reconciliation_record_changelist"), "reconciliation.view_record"),
        (reverse("admin:reconciliation_record_change", args=[world["record"].pk]), "reconciliation.view_record"),
        (reverse("admin:reconciliation_webhookendpoint_changelist"), "reconciliation.view_webhookendpoint"),
        (
            reverse("admin:reconciliation_webhookendpoint_change", args=[world["endpoint"].pk]),
            "reconciliation.view_webhookendpoint",
        ),
        (reverse("admin:reconciliation_webhookendpoint_add"), "reconciliation.add_webhookendpoint"),
        (reverse("admin:reconciliation_webhookdelivery_changelist"), "reconciliation.view_webhookdelivery"),
        (
            reverse("admin:reconciliation_webhookdelivery_change", args=[world["delivery"].pk]),
            "reconciliation.view_webhookdelivery",
        ),
    ]


def test_every_page_renders_for_staff_with_its_permission_and_is_refused_without(world, logged_in):
    for url, permission in pages(world):
        allowed = logged_in(staff(permission)).get(url)
        assert allowed.status_code == 200, url
        refused = logged_in(staff("reconciliation.view_tenant" if permission != "reconciliation.view_tenant" else VIEW))
        assert refused.get(url).status_code in (302, 403), url


def test_the_queues_are_listed_in_the_admin_index_and_sidebar_for_viewers_only(world, logged_in):
    entries = {
        reverse("admin:reconciliation_reviewqueue_changelist"): REVIEW,
        reverse("admin:reconciliation_exceptionsqueue_changelist"): EXCEPTIONS,
    }
    client = logged_in(staff(VIEW))
    viewer = client.get(reverse("admin:index")).content.decode()
    for entry, queue in entries.items():
        assert f'href="{entry}"' in viewer
        assert client.get(entry).url == queue
    other_client = logged_in(staff("reconciliation.view_tenant"))
    other = other_client.get(reverse("admin:index")).content.decode()
    assert not any(entry in other for entry in entries)
    assert all(other_client.get(entry).status_code == 403 for entry in entries)
    execution_page = logged_in(staff(VIEW)).get(
        reverse("admin:reconciliation_execution_change", args=[world["execution"].pk])
    )
    assert f'href="{REVIEW}?execution={world["execution"].pk}"' in execution_page.content.decode()


def test_viewers_without_change_execution_see_the_queues_but_no_buttons_and_cannot_post(world, logged_in):
    client = logged_in(staff(VIEW))
    page = client.get(REVIEW)
    assert world["match"].id in [row["match"].id for row in page.context["rows"]]
    assert 'value="confirm:' not in page.content.decode()

    posted = client.post(REVIEW, {"row": f"confirm:{world['match'].id}"})

    assert posted.status_code == 403
    assert Match.objects.get(id=world["match"].id).status == Match.Status.SUGGESTED


def test_execution_summary_is_rendered_as_tables(world, logged_in):
    execution = world["execution"]
    page = text(logged_in(staff(VIEW)).get(reverse("admin:reconciliation_execution_change", args=[execution.pk])))

    rate = execution.summary["match_rate"] * 100
    assert f"Match rate {rate:.2f} %" in page
    assert "Per pass" in page and "tolerance" in page
    assert "Open exceptions by reason no_candidate 1" in page
    assert "left 2 1" in page  # records, matched on the left side
    assert page.index("exact 0 0") < page.index("tolerance 0 1")  # passes in the order they ran


def test_cancel_action_cancels_a_queued_execution_through_the_service(logged_in):
    job = JobFactory()
    queued = Execution.objects.create(tenant_id=job.tenant_id, job=job)
    user = staff(VIEW, ACT)

    response = logged_in(user).post(
        reverse("admin:reconciliation_execution_changelist"),
        {"action": "cancel_selected", "_selected_action": [queued.pk]},
        follow=True,
    )

    assert Execution.objects.get(pk=queued.pk).status == Execution.Status.CANCELLED
    assert ActivityLog.objects.filter(action="execution_cancel", user=user, entity_id=str(queued.pk)).exists()
    assert any("1 execution(s) cancelled" in message for message in messages_of(response))
    viewer_page = logged_in(staff(VIEW)).get(reverse("admin:reconciliation_execution_changelist"))
    assert "cancel_selected" not in viewer_page.content.decode()


# --- Jobs: rules editor, run now ---------------------------------------------------------------------


def test_run_now_queues_an_execution_through_the_service(logged_in):
    job = JobFactory()
    client = logged_in(staff("reconciliation.view_reconciliationjob", "reconciliation.add_execution"))

    response = client.post(
        reverse("admin:reconciliation_reconciliationjob_changelist"),
        {"action": "run_selected", "_selected_action": [job.pk]},
        follow=True,
    )

    execution = Execution.objects.get(job=job)
    assert (execution.status, execution.dry_run, execution.requested_by_id) == (
        "queued",
        False,
        response.wsgi_request.user.pk,
    )
    # Its job is in the outbox, committed with the execution (published after commit).
    assert list(OutboxMessage.objects.values_list("job", "kwargs")) == [
        ("reconciliation.run_execution", {"execution_id": execution.pk})
    ]
    assert any(f"execution {execution.pk}" in message for message in messages_of(response))
    assert ActivityLog.objects.filter(action="execution_start", entity_id=str(execution.pk)).exists()


def test_dry_run_action_and_a_second_run_of_a_busy_job_is_refused_with_a_message(logged_in):
    job = JobFactory()
    client = logged_in(staff("reconciliation.view_reconciliationjob", "reconciliation.add_execution"))
    changelist = reverse("admin:reconciliation_reconciliationjob_changelist")

    with mock.patch("reconciliation.engine.jobs.run_execution.delay"):
        client.post(changelist, {"action": "dry_run_selected", "_selected_action": [job.pk]})
        again = client.post(changelist, {"action": "run_selected", "_selected_action": [job.pk]}, follow=True)

    assert list(Execution.objects.filter(job=job).values_list("dry_run", flat=True)) == [True]
    assert any("already queued or running" in message for message in messages_of(again))


def test_run_actions_need_add_execution(logged_in):
    client = logged_in(staff("reconciliation.view_reconciliationjob"))
    page = client.get(reverse("admin:reconciliation_reconciliationjob_changelist"))
    assert "run_selected" not in page.content.decode()


def test_invalid_rules_are_refused_with_their_json_path_and_valid_ones_saved_through_the_service(logged_in):
    tenant = TenantFactory()
    client = logged_in(staff("reconciliation.view_reconciliationjob", "reconciliation.add_reconciliationjob"))
    add = reverse("admin:reconciliation_reconciliationjob_add")
    form = {"tenant": tenant.pk, "name": "Bank vs ledger", "is_active": "on"}

    bad = client.post(add, {**form, "rules": '{"passes": {"tolerance": {"amount_pct": 99}}}'})
    good = client.post(add, {**form, "rules": '{"date_window_days": 5}'})

    assert bad.status_code == 200 and "passes.tolerance.amount_pct" in text(bad)
    assert good.status_code == 302
    job = ReconciliationJob.objects.get(tenant=tenant)
    assert job.rules == {"date_window_days": 5}
    assert ActivityLog.objects.filter(action="job_create", entity_id=str(job.pk)).exists()


def test_a_job_change_goes_through_the_service(logged_in):
    job = JobFactory(name="Old name")
    user = staff("reconciliation.view_reconciliationjob", "reconciliation.change_reconciliationjob")
    url = reverse("admin:reconciliation_reconciliationjob_change", args=[job.pk])

    response = logged_in(user).post(url, {"name": "New name", "rules": "{}"})

    assert response.status_code == 302
    job.refresh_from_db()
    assert (job.name, job.is_active) == ("New name", False)
    entry = ActivityLog.objects.get(action="job_update", user=user, entity_id=str(job.pk))
    assert entry.metadata == {"fields": ["is_active", "name"]}


# --- The review queue --------------------------------------------------------------------------------


def test_review_queue_lists_suggested_matches_with_both_sides_and_filters_them(logged_in):
    first, second = JobFactory(rules=REVIEW_RULES), JobFactory(rules=REVIEW_RULES)
    suggested_pairs(first, 2)
    suggested_pairs(second, 1, start=7)
    run(first), run(second)
    client = logged_in(staff(VIEW))

    everything = client.get(REVIEW)
    of_second = client.get(REVIEW, {"job": second.pk})
    confident = client.get(REVIEW, {"confidence_min": "0.99"})
    by_tenant = client.get(REVIEW, {"tenant": first.tenant_id, "pass_name": "tolerance"})
    bad = client.get(REVIEW, {"confidence_min": "high"})

    assert len(everything.context["rows"]) == 3
    assert "L1" in text(everything) and "R1" in text(everything) and first.tenant.name in text(everything)
    assert [row["job"].pk for row in of_second.context["rows"]] == [second.pk]
    assert confident.context["rows"] == []
    assert {row["job"].pk for row in by_tenant.context["rows"]} == {first.pk}
    assert bad.status_code == 200 and "Invalid filter" in text(bad)


def test_confirm_from_the_review_queue_changes_the_match_and_is_audited(world, logged_in):
    user = staff(VIEW, ACT)
    match = world["match"]

    response = logged_in(user).post(
        f"{REVIEW}?job={world['job'].pk}",
        {"row": f"confirm:{match.id}", f"note-{match.id}": "same invoice"},
        follow=True,
    )

    confirmed = Match.objects.get(id=match.id)
    assert (confirmed.status, confirmed.note, confirmed.reviewed_by_id) == ("confirmed", "same invoice", user.pk)
    assert ActivityLog.objects.filter(action="match_confirm", user=user, entity_id=str(match.id)).exists()
    assert response.redirect_chain[-1][0] == f"{REVIEW}?job={world['job'].pk}"  # filters kept
    assert any("1 match(es) confirmed" in message for message in messages_of(response))


def test_reject_needs_a_note_then_reopens_the_records_as_exceptions(world, logged_in):
    user = staff(VIEW, ACT)
    client = logged_in(user)
    match = world["match"]

    without_note = client.post(REVIEW, {"bulk": "reject", "ids": [match.id]}, follow=True)
    assert Match.objects.get(id=match.id).status == Match.Status.SUGGESTED
    assert any("needs one" in message for message in messages_of(without_note))

    client.post(REVIEW, {"bulk": "reject", "ids": [match.id], "note": "different invoice"})

    rejected = Match.objects.get(id=match.id)
    assert (rejected.status, rejected.note) == ("rejected", "different invoice")
    reopened = set(
        ReconciliationException.objects.filter(reason="rejected", resolved_at__isnull=True).values_list(
            "record_id", flat=True
        )
    )
    assert reopened == {*match.left_ids, *match.right_ids}
    assert ActivityLog.objects.filter(action="match_reject", user=user, entity_id=str(match.id)).exists()


def test_bulk_confirm_reports_matches_already_decided(logged_in):
    job = JobFactory(rules=REVIEW_RULES)
    suggested_pairs(job, 2)
    run(job)
    first, second = Match.objects.filter(job_id=job.pk).order_by("id")
    client = logged_in(staff(VIEW, ACT))
    client.post(REVIEW, {"row": f"reject:{first.id}", f"note-{first.id}": "no"})

    response = client.post(REVIEW, {"bulk": "confirm", "ids": [first.id, second.id]}, follow=True)

    assert Match.objects.get(id=second.id).status == "confirmed"
    assert Match.objects.get(id=first.id).status == "rejected"
    assert any(f"Match {first.id}" in message and "rejected" in message for message in messages_of(response))


def test_review_queue_pages_by_keyset(logged_in, monkeypatch):
    monkeypatch.setattr("reconciliation.admin.queues.QUEUE_PAGE_SIZE", 2)
    job = JobFactory(rules=REVIEW_RULES)
    suggested_pairs(job, 3)
    run(job)
    client = logged_in(staff(VIEW))

    first = client.get(REVIEW)
    second = client.get(first.context["next_url"])
    back = client.get(second.context["previous_url"])

    ids = sorted(Match.objects.filter(job_id=job.pk).values_list("id", flat=True))
    assert [row["match"].id for row in first.context["rows"]] == ids[:2]
    assert [row["match"].id for row in second.context["rows"]] == ids[2:]
    assert [row["match"].id for row in back.context["rows"]] == ids[:2]
    assert client.get(REVIEW, {"cursor": "garbage"}).status_code == 302


# --- The exceptions queue ----------------------------------------------------------------------------


def test_resolve_from_the_exceptions_queue_closes_it_with_the_note_and_is_audited(world, logged_in):
    user = staff(VIEW, ACT)
    client = logged_in(user)
    exception = world["exception"]
    assert exception.id in [row["exception"].id for row in client.get(EXCEPTIONS).context["rows"]]

    missing_note = client.post(EXCEPTIONS, {"row": f"resolve:{exception.id}"}, follow=True)
    assert ReconciliationException.objects.get(id=exception.id).resolved_at is None
    assert any("note is required" in message for message in messages_of(missing_note))

    client.post(EXCEPTIONS, {"row": f"resolve:{exception.id}", f"note-{exception.id}": "bank fee, written off"})

    resolved = ReconciliationException.objects.get(id=exception.id)
    assert (resolved.resolution, resolved.resolved_by_id) == ("bank fee, written off", user.pk)
    assert resolved.resolved_at is not None
    assert exception.id not in [row["exception"].id for row in client.get(EXCEPTIONS).context["rows"]]
    assert ActivityLog.objects.filter(action="unmatched_resolve", user=user, entity_id=str(exception.id)).exists()


def test_exceptions_queue_filters_by_reason_side_and_job(world, logged_in):
    client = logged_in(staff(VIEW))
    job = world["job"]

    assert len(client.get(EXCEPTIONS, {"job": job.pk, "reason": "no_candidate", "side": "left"}).context["rows"]) == 1
    assert client.get(EXCEPTIONS, {"reason": "ambiguous"}).context["rows"] == []
    assert client.get(EXCEPTIONS, {"job": job.pk, "side": "right"}).context["rows"] == []


@pytest.fixture
def low_confidence_pair():
    """L1 and R1 agree on amount (within drift) and date only: too weak to suggest, so both are
    low_confidence exceptions — and each is the other's candidate."""
    job = JobFactory(rules={"review_threshold": 0.8, "auto_threshold": 0.9})
    load(job, "left", [("L1", "42.00", "EUR", "2026-03-10")])
    load(
        job,
        "right",
        [
            ("R1", "42.50", "EUR", "2026-03-13"),
            ("R2", "42.50", "USD", "2026-03-10"),  # other currency
            ("R3", "45.00", "EUR", "2026-03-10"),  # outside the drift (1.00)
            ("R4", "42.00", "EUR", "2026-03-20"),  # outside the window (3 days)
        ],
    )
    run(job)
    records = dict(Record.objects.filter(job=job).values_list("external_id", "id"))
    return {"job": job, "records": records, "exception": ReconciliationException.objects.get(record_id=records["L1"])}


def test_an_exception_shows_the_open_candidates_within_drift_and_window(low_confidence_pair, logged_in):
    exception = low_confidence_pair["exception"]
    url = reverse("admin:reconciliation_exception_detail", args=[exception.id])

    page = logged_in(staff(VIEW)).get(url)

    assert exception.reason == "low_confidence"
    assert [candidate.external_id for candidate in page.context["candidates"]] == ["R1"]
    assert "Match with this record" not in page.content.decode()  # viewers only look


def test_candidates_are_one_query_served_by_the_candidate_index(low_confidence_pair, logged_in):
    exception = low_confidence_pair["exception"]
    url = reverse("admin:reconciliation_exception_detail", args=[exception.id])
    client = logged_in(staff(VIEW))
    record = Record.objects.get(pk=exception.record_id)

    with CaptureQueriesContext(connection) as queries:
        client.get(url)

    assert len([q for q in queries if '"reconciliation_record"."booked_on" >=' in q["sql"]]) == 1
    _drift, candidates = exception_candidates(record, parse_rules(record.job.rules), limit=MAX_CANDIDATES)
    with transaction.atomic(), connection.cursor() as cursor:
        # On 5 rows any index is as cheap as another: with the unique (job, side, external_id)
        # index out of the way (rolled back) the plan shows the candidate index can serve it all.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # fire the deferred foreign key checks first
        cursor.execute("ALTER TABLE reconciliation_record DROP CONSTRAINT recon_record_job_side_extid_uniq")
        scan = scan_on(index_scans(candidates, only="recon_record_candidate_idx"), "recon_record_candidate_idx")
        transaction.set_rollback(True)
    assert "currency" in scan.index_cond and "amount" in scan.index_cond


def test_match_with_a_candidate_from_an_exception_makes_a_manual_match(low_confidence_pair, logged_in):
    user = staff(VIEW, ACT)
    exception, records = low_confidence_pair["exception"], low_confidence_pair["records"]
    url = reverse("admin:reconciliation_exception_detail", args=[exception.id])

    response = logged_in(user).post(url, {"match_with": records["R1"], "note": "same payment"}, follow=True)

    match = Match.objects.get(job_id=low_confidence_pair["job"].pk, pass_name="manual")
    assert (match.left_ids, match.right_ids, match.status, match.note) == (
        [records["L1"]],
        [records["R1"]],
        "confirmed",
        "same payment",
    )
    assert set(MatchedRecord.objects.filter(match_id=match.id).values_list("record_id", flat=True)) == {
        records["L1"],
        records["R1"],
    }
    assert not ReconciliationException.objects.filter(
        record_id__in=[records["L1"], records["R1"]], resolved_at__isnull=True
    ).exists()
    assert ActivityLog.objects.filter(action="match_manual", user=user, entity_id=str(match.id)).exists()
    assert any(f"match {match.id}" in message for message in messages_of(response))


def test_matching_with_a_record_already_matched_is_refused_with_a_message(low_confidence_pair, logged_in):
    exception, records = low_confidence_pair["exception"], low_confidence_pair["records"]
    url = reverse("admin:reconciliation_exception_detail", args=[exception.id])
    client = logged_in(staff(VIEW, ACT))
    client.post(url, {"match_with": records["R1"]})

    response = client.post(url, {"match_with": records["R1"]}, follow=True)

    assert Match.objects.filter(job_id=low_confidence_pair["job"].pk).count() == 1
    assert any("not open" in message for message in messages_of(response))


def test_a_malformed_queue_post_is_a_400(world, logged_in):
    client = logged_in(staff(VIEW, ACT))

    assert client.post(REVIEW, {"row": "explode:1"}).status_code == 400
    assert client.post(EXCEPTIONS, {"bulk": "resolve", "ids": ["x"], "note": "n"}).status_code == 400


def test_executions_are_filtered_by_job_and_tenant_id(world, logged_in):
    other = run(JobFactory())
    client = logged_in(staff(VIEW))
    changelist = reverse("admin:reconciliation_execution_changelist")

    by_job = client.get(changelist, {"job": world["job"].pk}).context["cl"].result_list
    by_tenant = client.get(changelist, {"tenant": other.tenant_id}).context["cl"].result_list

    assert [e.pk for e in by_job] == [world["execution"].pk]
    assert [e.pk for e in by_tenant] == [other.pk]


def test_searching_executions_and_deliveries_by_id_ignores_words(world, logged_in):
    client = logged_in(staff(VIEW, "reconciliation.view_webhookdelivery"))
    executions = reverse("admin:reconciliation_execution_changelist")
    deliveries = reverse("admin:reconciliation_webhookdelivery_changelist")

    assert list(client.get(executions, {"q": "abc"}).context["cl"].result_list) == []
    found = client.get(executions, {"q": str(world["execution"].pk)}).context["cl"].result_list
    assert [e.pk for e in found] == [world["execution"].pk]
    assert client.get(deliveries, {"q": "abc"}).status_code == 200


def test_an_exception_page_for_an_unknown_id_is_404(logged_in):
    assert (
        logged_in(staff(VIEW)).get(reverse("admin:reconciliation_exception_detail", args=[999_999])).status_code == 404
    )


# --- Webhooks ----------------------------------------------------------------------------------------


def test_webhook_endpoint_is_created_through_the_service_its_secret_shown_once_and_bad_urls_refused(
    logged_in, settings
):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    tenant = TenantFactory()
    user = staff("reconciliation.view_webhookendpoint", "reconciliation.add_webhookendpoint")
    client = logged_in(user)
    add = reverse("admin:reconciliation_webhookendpoint_add")
    form = {"tenant": tenant.pk, "events": ["execution.completed"], "is_active": "on"}

    refused = client.post(add, {**form, "url": "http://127.0.0.1:9/hook"})
    created = client.post(add, {**form, "url": "https://93.184.215.14/hook"}, follow=True)

    assert refused.status_code == 200 and "loopback" in text(refused)
    endpoint = WebhookEndpoint.objects.get(tenant=tenant)
    assert any(endpoint.secret in message for message in messages_of(created))
    assert (
        endpoint.secret
        not in client.get(reverse("admin:reconciliation_webhookendpoint_change", args=[endpoint.pk])).content.decode()
    )
    assert ActivityLog.objects.filter(action="webhook_endpoint_create", entity_id=str(endpoint.pk)).exists()


def test_webhook_endpoint_changes_go_through_the_service_and_a_rotated_secret_is_shown_once(world, logged_in):
    endpoint = world["endpoint"]
    user = staff("reconciliation.view_webhookendpoint", "reconciliation.change_webhookendpoint")
    url = reverse("admin:reconciliation_webhookendpoint_change", args=[endpoint.pk])
    form = {"url": "https://93.184.215.14/b", "events": ["execution.failed"], "rotate_secret": "on"}

    response = logged_in(user).post(url, form, follow=True)

    endpoint.refresh_from_db()
    assert (endpoint.url, endpoint.events, endpoint.is_active) == (form["url"], ["execution.failed"], False)
    assert endpoint.secret != "s" and any(endpoint.secret in message for message in messages_of(response))
    entry = ActivityLog.objects.get(action="webhook_endpoint_update", user=user)
    assert entry.metadata["secret_rotated"] is True and endpoint.secret not in str(entry.metadata)


def test_an_endpoint_whose_host_does_not_resolve_can_still_be_deactivated(world, logged_in):
    endpoint = world["endpoint"]  # hooks.example.com: no DNS here
    url = reverse("admin:reconciliation_webhookendpoint_change", args=[endpoint.pk])
    client = logged_in(staff("reconciliation.view_webhookendpoint", "reconciliation.change_webhookendpoint"))

    response = client.post(url, {"url": endpoint.url, "events": endpoint.events})

    assert response.status_code == 302
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).is_active is False


def test_redeliver_action_requeues_the_deliveries(world, logged_in):
    delivery = world["delivery"]
    client = logged_in(staff("reconciliation.view_webhookdelivery", "reconciliation.change_webhookdelivery"))

    client.post(
        reverse("admin:reconciliation_webhookdelivery_changelist"),
        {"action": "redeliver_selected", "_selected_action": [delivery.pk]},
    )

    assert WebhookDelivery.objects.get(pk=delivery.pk).status == "pending"
    assert list(OutboxMessage.objects.values_list("job", "kwargs")) == [
        ("webhooks.deliver", {"delivery_id": delivery.pk})
    ]
    assert ActivityLog.objects.filter(action="webhook_redeliver").exists()


# --- Records -----------------------------------------------------------------------------------------


def test_records_are_searched_by_exact_external_id_and_filtered_by_job_and_status(world, logged_in):
    client = logged_in(staff("reconciliation.view_record"))
    changelist = reverse("admin:reconciliation_record_changelist")
    job = world["job"]

    found = client.get(changelist, {"q": "L1"})
    lowercase = client.get(changelist, {"q": "l1"})
    open_of_job = client.get(changelist, {"job": job.pk, "status": "open"})
    bad = client.get(changelist, {"job": "x"})

    assert [record.external_id for record in found.context["cl"].result_list] == ["L1"]
    assert list(lowercase.context["cl"].result_list) == []
    assert [record.external_id for record in open_of_job.context["cl"].result_list] == ["X1"]
    assert bad.status_code == 302  # Django's "?e=1" for a bad filter value


def test_filtered_record_lists_are_counted_only_up_to_the_cap(world, logged_in, monkeypatch):
    monkeypatch.setattr("reconciliation.admin.common.CappedCountPaginator.cap", 2)
    client = logged_in(staff("reconciliation.view_record"))
    changelist = reverse("admin:reconciliation_record_changelist")

    with CaptureQueriesContext(connection) as queries:
        many = client.get(changelist, {"job": world["job"].pk})  # 3 records
    counts = [query["sql"] for query in queries if "COUNT(" in query["sql"].upper()]
    few = client.get(changelist, {"job": world["job"].pk, "side": "right"})  # 1 record

    assert "more than 2 records" in text(many)
    assert len(counts) == 1 and "LIMIT 3" in counts[0]
    assert "1 record" in text(few) and "more than" not in text(few)


# --- No N+1 ------------------------------------------------------------------------------------------


def queries_for(client, url, params=None) -> tuple[int, list[str]]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, params or {})
    assert response.status_code == 200
    return len(queries), [query["sql"] for query in queries]


def test_queues_run_a_constant_number_of_queries_and_never_count(logged_in, django_assert_num_queries):
    tenant = TenantFactory()
    job = JobFactory(tenant=tenant, rules=REVIEW_RULES)
    client = logged_in(staff(VIEW, ACT))
    suggested_pairs(job, 2)
    lonely_records(job, 2)
    run(job)
    review_count, review_sql = queries_for(client, REVIEW)
    exceptions_count, exceptions_sql = queries_for(client, EXCEPTIONS)
    other_job = JobFactory(rules=REVIEW_RULES)  # more jobs and tenants on the page, too
    suggested_pairs(job, 6, start=3)
    suggested_pairs(other_job, 3)
    lonely_records(job, 6, start=3)
    lonely_records(other_job, 3)
    run(job), run(other_job)

    with django_assert_num_queries(review_count):
        many = client.get(REVIEW)
    assert len(many.context["rows"]) == 11
    with django_assert_num_queries(exceptions_count):
        many = client.get(EXCEPTIONS)
    assert len(many.context["rows"]) == 11
    assert not any("COUNT(" in sql.upper() for sql in review_sql + exceptions_sql)


CHANGELISTS = {
    "tenant": "reconciliation.view_tenant",
    "reconciliationjob": "reconciliation.view_reconciliationjob",
    "execution": VIEW,
    "record": "reconciliation.view_record",
    "webhookendpoint": "reconciliation.view_webhookendpoint",
    "webhookdelivery": "reconciliation.view_webhookdelivery",
}


def add_rows(index: int) -> None:
    job = JobFactory(tenant=TenantFactory(), rules=REVIEW_RULES)
    suggested_pairs(job, 2)
    run(job)
    endpoint = WebhookEndpoint.objects.create(
        tenant=job.tenant, url=f"https://hooks.example.com/{index}", secret="s", events=["execution.completed"]
    )
    WebhookDelivery.objects.create(endpoint=endpoint, tenant=job.tenant, event="execution.completed", payload={})


@pytest.mark.parametrize("model", sorted(CHANGELISTS))
def test_changelists_run_a_constant_number_of_queries(model, logged_in, django_assert_num_queries):
    client = logged_in(staff(CHANGELISTS[model]))
    url = reverse(f"admin:reconciliation_{model}_changelist")
    add_rows(0)
    few, _ = queries_for(client, url)
    for index in range(1, 5):
        add_rows(index)

    with django_assert_num_queries(few):
        response = client.get(url)
    assert len(response.context["cl"].result_list) >= 5


def test_tenant_page_lists_members_without_a_query_per_member(logged_in, django_assert_num_queries):
    tenant = TenantFactory()
    client = logged_in(
        staff(
            "reconciliation.view_tenant",
            "reconciliation.change_tenant",
            "reconciliation.view_tenantmembership",
            "reconciliation.change_tenantmembership",
        )
    )
    url = reverse("admin:reconciliation_tenant_change", args=[tenant.pk])
    member(tenant)
    queries_for(client, url)  # warm: the first request of a process fills per-process caches
    few, _ = queries_for(client, url)
    for _ in range(5):
        member(tenant)

    with django_assert_num_queries(few):
        response = client.get(url)
    page = text(response)
    usernames = list(tenant.memberships.values_list("user__username", flat=True))
    assert len(usernames) == 6 and all(name in page for name in usernames)
