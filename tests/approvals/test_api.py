"""The approvals API: entities, proposals, decisions, rules, audit log; permissions and 429s."""

import pytest
from rest_framework.test import APIClient

from approvals import automation, services
from approvals.models import ApprovalRule, Topic, Version
from approvals.policy import Policy, PolicyRule
from tests.approvals.factories import RuleFactory, VersionFactory
from tests.conftest import grant
from tests.factories import UserFactory

BASE = "/api/v1/approvals"
pytestmark = pytest.mark.django_db

AUTHOR_PERMISSIONS = ["approvals.view_topic", "approvals.add_topic", "approvals.view_version", "approvals.add_version"]
REVIEWER_PERMISSIONS = [*AUTHOR_PERMISSIONS, "approvals.decide_version", "approvals.view_automationauditlog"]
RULE_PERMISSIONS = [f"approvals.{action}_approvalrule" for action in ("view", "add", "change", "delete")]


@pytest.fixture(autouse=True)
def one_rate_limit_window(monkeypatch):
    monkeypatch.setattr("approvals.ratelimit.current_window", lambda: 29_000_001)


@pytest.fixture
def author(client_for):
    return client_for(grant(UserFactory(), *AUTHOR_PERMISSIONS))


@pytest.fixture
def reviewer_user():
    return grant(UserFactory(), *REVIEWER_PERMISSIONS, *RULE_PERMISSIONS)


@pytest.fixture
def reviewer(client_for, reviewer_user):
    return client_for(reviewer_user)


def test_content_changes_only_through_approved_versions(author, reviewer, client_for):
    topic = author.post(f"{BASE}/topics/", {"title": "Refunds", "body": "v1"}, format="json").json()
    editor = client_for(grant(UserFactory(), "approvals.view_topic", "approvals.change_topic"))
    assert editor.patch(f"{BASE}/topics/{topic['id']}/", {"body": "edited"}, format="json").status_code == 405

    proposed = author.post(
        f"{BASE}/versions/",
        {"entity_type": "topic", "entity_id": topic["id"], "title": "Refunds", "content": "v2"},
        format="json",
    )
    assert proposed.status_code == 201, proposed.content
    assert proposed.json()["status"] == "pending"
    assert Topic.objects.get(pk=topic["id"]).body == "v1"

    approved = reviewer.post(f"{BASE}/versions/{proposed.json()['id']}/approve/", {"reason": "fine"}, format="json")
    assert approved.status_code == 200
    assert approved.json()["status"] == "approved"
    assert Topic.objects.get(pk=topic["id"]).body == "v2"


def test_proposing_for_a_missing_entity_is_a_400_naming_entity_id(author):
    response = author.post(
        f"{BASE}/versions/", {"entity_type": "atom", "entity_id": 999999, "title": "t", "content": "c"}, format="json"
    )
    assert response.status_code == 400
    assert "entity_id" in response.json()["error"]["fields"]


def test_authors_cannot_decide(author):
    version = VersionFactory()
    assert author.post(f"{BASE}/versions/{version.pk}/approve/", {}, format="json").status_code == 403
    assert author.post(f"{BASE}/versions/bulk-approve/", {"ids": [version.pk]}, format="json").status_code == 403


def test_anonymous_is_401():
    assert APIClient().get(f"{BASE}/versions/").status_code == 401


def test_deciding_an_already_decided_version_is_a_409(reviewer):
    version = VersionFactory()
    reviewer.post(f"{BASE}/versions/{version.pk}/reject/", {}, format="json")
    response = reviewer.post(f"{BASE}/versions/{version.pk}/approve/", {}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


def test_an_unknown_version_is_a_404(reviewer):
    assert reviewer.post(f"{BASE}/versions/999999/approve/", {}, format="json").status_code == 404


def test_bulk_approve_reports_already_decided_and_changes_the_rest(reviewer):
    pending, rejected = VersionFactory(), VersionFactory()
    reviewer.post(f"{BASE}/versions/{rejected.pk}/reject/", {}, format="json")

    response = reviewer.post(f"{BASE}/versions/bulk-approve/", {"ids": [pending.pk, rejected.pk]}, format="json")

    assert response.status_code == 200
    assert response.json() == {"decided": [pending.pk], "already_decided": [rejected.pk]}


def test_bulk_approve_is_all_or_nothing_with_an_unknown_id(reviewer):
    versions = VersionFactory.create_batch(2)
    response = reviewer.post(
        f"{BASE}/versions/bulk-approve/", {"ids": [v.pk for v in versions] + [999999]}, format="json"
    )
    assert response.status_code == 400
    assert "999999" in response.json()["error"]["fields"]["ids"][0]
    assert set(Version.objects.values_list("status", flat=True)) == {"pending"}


@pytest.mark.parametrize("ids", [[], list(range(1, 502)), ["x"]])
def test_bulk_needs_1_to_500_integer_ids(reviewer, ids):
    response = reviewer.post(f"{BASE}/versions/bulk-reject/", {"ids": ids}, format="json")
    assert response.status_code == 400
    assert "ids" in response.json()["error"]["fields"]


def test_over_the_approval_budget_is_a_429_saying_how_many_remain_and_when(reviewer, settings):
    settings.APPROVALS_PER_MINUTE = 3
    versions = VersionFactory.create_batch(5)
    assert (
        reviewer.post(
            f"{BASE}/versions/bulk-approve/", {"ids": [v.pk for v in versions[:2]]}, format="json"
        ).status_code
        == 200
    )

    response = reviewer.post(f"{BASE}/versions/bulk-approve/", {"ids": [v.pk for v in versions[2:]]}, format="json")

    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "rate_limited"
    assert error["remaining"] == 1
    assert 0 < error["retry_after_s"] <= 60
    assert int(response["Retry-After"]) == error["retry_after_s"]


def test_revert_undoes_a_decision(reviewer):
    version = VersionFactory()
    reviewer.post(f"{BASE}/versions/{version.pk}/approve/", {}, format="json")
    response = reviewer.post(f"{BASE}/versions/{version.pk}/revert/", {"reason": "mistake"}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "reverted"


def test_version_list_filters_and_runs_constant_queries(reviewer, django_assert_num_queries):
    topic_versions = VersionFactory.create_batch(4)
    VersionFactory(entity_type="atom", entity_id=1)
    with django_assert_num_queries(5):
        body = reviewer.get(f"{BASE}/versions/", {"entity_type": "topic", "page_size": 2}).json()
    assert len(body["results"]) == 2
    with django_assert_num_queries(5):
        body = reviewer.get(f"{BASE}/versions/", {"entity_type": "topic", "page_size": 10}).json()
    assert {row["id"] for row in body["results"]} == {v.pk for v in topic_versions}
    assert reviewer.get(f"{BASE}/versions/", {"status": "approved"}).json()["results"] == []


def test_pending_count_is_cached_and_dropped_on_decisions(reviewer, django_capture_on_commit_callbacks):
    versions = VersionFactory.create_batch(3)
    assert reviewer.get(f"{BASE}/pending-count/").json() == {"pending": 3}
    VersionFactory.create_batch(2)  # not through the service: the cached count stays until a decision
    assert reviewer.get(f"{BASE}/pending-count/").json() == {"pending": 3}
    with django_capture_on_commit_callbacks(execute=True):
        reviewer.post(f"{BASE}/versions/{versions[0].pk}/approve/", {}, format="json")
    assert reviewer.get(f"{BASE}/pending-count/").json() == {"pending": 4}


# --- Rules --------------------------------------------------------------------------------------------


def test_an_invalid_rule_is_a_400_naming_the_json_path(reviewer):
    response = reviewer.post(
        f"{BASE}/rules/",
        {
            "name": "bad",
            "action": "approve",
            "conditions": {"all": [{"field": "content_length", "op": "nope", "value": 1}]},
        },
        format="json",
    )
    assert response.status_code == 400
    (message,) = response.json()["error"]["fields"]["conditions"]
    assert message.startswith("conditions.all[0].op")


def test_rule_changes_bump_the_revision_and_any_number_of_rules_is_active(reviewer):
    first = reviewer.post(
        f"{BASE}/rules/",
        {"name": "small", "action": "approve", "conditions": {"field": "content_length", "op": "lt", "value": 10}},
        format="json",
    ).json()
    second = RuleFactory()
    reviewer.post(f"{BASE}/rules/{first['id']}/activate/")
    activated = reviewer.post(f"{BASE}/rules/{second.pk}/activate/").json()
    assert activated["is_active"] is True
    assert set(ApprovalRule.objects.filter(is_active=True).values_list("pk", flat=True)) == {first["id"], second.pk}
    edited = reviewer.patch(f"{BASE}/rules/{first['id']}/", {"action": "reject"}, format="json").json()
    assert edited["revision"] == 3  # created r1, activated r2, edited r3


def test_preview_counts_and_samples_without_writing(reviewer):
    small = VersionFactory.create_batch(2, content="tiny")
    VersionFactory(content="x" * 100)
    rule = RuleFactory(conditions={"field": "content_length", "op": "lt", "value": 10})

    body = reviewer.get(f"{BASE}/rules/{rule.pk}/preview/").json()

    assert (body["evaluated"], body["matched"], body["action"]) == (3, 2, "approve")
    assert {row["id"] for row in body["sample"]} == {v.pk for v in small}
    assert set(Version.objects.values_list("status", flat=True)) == {"pending"}


def test_audit_log_lists_automated_decisions_newest_first(reviewer_user, client_for):
    rule = RuleFactory(conditions={"field": "content_length", "op": "lt", "value": 10})
    versions = VersionFactory.create_batch(3, content="tiny")
    automation.automation_run(
        policy=Policy.of([PolicyRule.of(rule)]),
        batch_size=2,
        deadline_s=None,
    )
    body = client_for(reviewer_user).get(f"{BASE}/audit-log/", {"rule": rule.pk}).json()
    assert sorted(row["version_id"] for row in body["results"]) == sorted(v.pk for v in versions)
    assert all(row["decision"] == "approved" and row["rule_revision"] == 1 for row in body["results"])


# --- The policy, evaluate mode, backtest ----------------------------------------------------------------


def test_rules_carry_mode_priority_and_scope_and_are_listed_in_the_order_tried(reviewer):
    late = reviewer.post(
        f"{BASE}/rules/",
        {
            "name": "late",
            "action": "leave",
            "priority": 9,
            "conditions": {"field": "content_length", "op": "lt", "value": 1},
        },
        format="json",
    ).json()
    early = reviewer.post(
        f"{BASE}/rules/",
        {
            "name": "early",
            "action": "reject",
            "priority": 1,
            "mode": "evaluate",
            "scope_entity_type": "atom",
            "scope_tags": ["spam"],
            "conditions": {"field": "content", "op": "contains", "value": "buy now"},
        },
        format="json",
    ).json()
    assert (early["mode"], early["scope_entity_type"], early["scope_tags"]) == ("evaluate", "atom", ["spam"])
    listed = [row["id"] for row in reviewer.get(f"{BASE}/rules/").json()["results"]]
    assert listed.index(early["id"]) < listed.index(late["id"])


@pytest.mark.parametrize(
    ("scope", "field"),
    [({"scope_entity_type": "page"}, "scope_entity_type"), ({"scope_tags": "spam"}, "scope_tags")],
)
def test_an_invalid_scope_is_a_400_naming_the_field(reviewer, scope, field):
    body = {"name": "bad", "action": "approve", "conditions": {"field": "content_length", "op": "lt", "value": 1}}
    response = reviewer.post(f"{BASE}/rules/", {**body, **scope}, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_backtest_of_a_rule_and_of_the_policy(reviewer, reviewer_user):
    rule = RuleFactory(conditions={"field": "content_length", "op": "lt", "value": 10}, is_active=True)
    approved, rejected = VersionFactory(content="tiny"), VersionFactory(content="tiny")
    VersionFactory(content="tiny")  # pending: not in a backtest

    services.versions_decide(version_ids=[approved.pk], approve=True, user=reviewer_user)
    services.versions_decide(version_ids=[rejected.pk], approve=False, user=reviewer_user)

    one = reviewer.get(f"{BASE}/rules/{rule.pk}/backtest/", {"days": 7}).json()
    policy = reviewer.get(f"{BASE}/rules/policy-backtest/").json()

    for body in (one, policy):
        assert (body["evaluated"], body["would_approve"], body["agreements"], body["false_approvals"]) == (2, 2, 1, 1)
        assert body["agreement_rate"] == 0.5
        assert body["by_rule"] == [
            {**{k: v for k, v in body.items() if k not in ("days", "evaluated", "by_rule")}, "rule_id": rule.pk}
        ]


@pytest.mark.parametrize("days", ["0", "367", "soon"])
def test_a_backtest_window_outside_1_to_366_days_is_a_400(reviewer, days):
    rule = RuleFactory()
    response = reviewer.get(f"{BASE}/rules/{rule.pk}/backtest/", {"days": days})
    assert response.status_code == 400
    assert "days" in response.json()["error"]["fields"]


def test_the_evaluation_of_a_rule_in_evaluate_mode(reviewer):
    rule = RuleFactory(mode="evaluate", is_active=True)
    body = reviewer.get(f"{BASE}/rules/{rule.pk}/evaluation/").json()
    assert body == {"recorded": 0, "compared": 0, "agreements": 0, "disagreement_rate": None}
