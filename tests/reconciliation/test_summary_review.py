"""The summary endpoint shows people's review as it happens (issue 13, item 4).

The execution's summary is the snapshot of its run; next to it a `review` block counts the
review actions on its work. Every action drops the cached body, so a reviewer polling the
summary gets a new body and a new ETag, never a 304 for work they just did.
"""

import pytest
from django.urls import reverse

from reconciliation.engine import jobs
from reconciliation.models import Execution, Match, ReconciliationException, TenantMembership
from tests.reconciliation.factories import JobFactory, load, member

pytestmark = pytest.mark.django_db


@pytest.fixture
def reviewed_world(client_for):
    """Three suggested pairs (same counterparty, drifted amount) and one record with no partner."""
    job = JobFactory(rules={"auto_threshold": 0.99})
    load(job, "left", [("L1", "100.00", "EUR", "2026-03-10", "", "Acme"),
                       ("L2", "300.00", "EUR", "2026-04-10", "", "Globex"),
                       ("L3", "700.00", "EUR", "2026-05-10", "", "Initech"),
                       ("L9", "5.00", "EUR", "2026-03-10")])  # fmt: skip
    load(job, "right", [("R1", "100.40", "EUR", "2026-03-11", "", "Acme"),
                        ("R2", "300.40", "EUR", "2026-04-11", "", "Globex"),
                        ("R3", "700.40", "EUR", "2026-05-11", "", "Initech")])  # fmt: skip
    execution = Execution.objects.create(tenant_id=job.tenant_id, job=job)
    jobs.run_execution.run_now({"execution_id": execution.pk})
    client = client_for(member(job.tenant, TenantMembership.Role.OPERATOR))
    return {
        "client": client,
        "url": reverse("reconciliation-summary", kwargs={"pk": execution.pk}),
        "matches": list(Match.objects.filter(job_id=job.pk).order_by("id")),
        "exception": ReconciliationException.objects.get(job_id=job.pk),
    }


def test_every_review_action_changes_the_summary_body_and_its_etag(reviewed_world, django_capture_on_commit_callbacks):
    client, url = reviewed_world["client"], reviewed_world["url"]
    first, second, third = reviewed_world["matches"]
    before = client.get(url)
    assert before.json()["review"] == {}
    assert before.json()["summary"]["matches"] == {"auto": 0, "suggested": 3}
    etags = [before["ETag"]]
    actions = [
        (reverse("recon-match-confirm", kwargs={"pk": first.id}), "confirmed"),
        (reverse("recon-match-reject", kwargs={"pk": second.id}), "rejected"),
        (reverse("recon-match-unmatch", kwargs={"pk": third.id}), "unmatched"),
        (reverse("recon-exception-resolve", kwargs={"pk": reviewed_world["exception"].id}), "exceptions_resolved"),
    ]

    for action_url, counter in actions:
        with django_capture_on_commit_callbacks(execute=True):  # the action commits
            assert client.post(action_url, {"note": "checked"}, format="json").status_code == 200
        polled = client.get(url, HTTP_IF_NONE_MATCH=etags[-1])
        assert polled.status_code == 200, f"{counter}: the summary did not change"
        assert polled.json()["review"][counter] == 1
        etags.append(polled["ETag"])

    review = client.get(url).json()["review"]
    assert {key: value for key, value in review.items() if key != "last_review_at"} == {
        "confirmed": 1, "rejected": 1, "unmatched": 1, "exceptions_resolved": 1
    }  # fmt: skip
    assert len(set(etags)) == len(etags)


def test_the_run_snapshot_stays_what_the_run_found(reviewed_world, django_capture_on_commit_callbacks):
    client, url = reviewed_world["client"], reviewed_world["url"]
    snapshot = client.get(url).json()["summary"]

    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("recon-match-confirm", kwargs={"pk": reviewed_world["matches"][0].id}), {}, format="json")

    assert client.get(url).json()["summary"] == snapshot
