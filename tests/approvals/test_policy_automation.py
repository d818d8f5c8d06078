"""The automation under a policy of several rules, and rules in evaluate mode."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals import automation, selectors, services
from approvals.models import AutomationAuditLog, RuleEvaluation, Version
from approvals.policy import Policy, PolicyRule
from project.models import ActivityLog
from tests.approvals.factories import RuleFactory, VersionFactory
from tests.factories import UserFactory

SHORT = {"field": "content_length", "op": "lt", "value": 20}
SPAM = {"field": "content", "op": "contains", "value": "buy now"}
EVERYTHING = {"field": "content_length", "op": "gte", "value": 0}


def run(*rules, batch_size=500):
    policy = Policy.of(PolicyRule.of(rule) for rule in rules)
    return automation.automation_run(policy=policy, batch_size=batch_size, deadline_s=None)


@pytest.mark.django_db
def test_two_live_rules_decide_together_the_first_match_in_priority_order_wins():
    reject_spam = RuleFactory(name="Reject spam", conditions=SPAM, action="reject", priority=1, is_active=True)
    approve_short = RuleFactory(name="Approve short", conditions=SHORT, action="approve", priority=2, is_active=True)
    short_spam = VersionFactory(content="buy now")  # both match: spam is tried first
    short = VersionFactory(content="tiny")
    long = VersionFactory(content="x" * 50)

    result = run(approve_short, reject_spam)

    assert result.decided == 2
    decided = {v.pk: (v.status, v.decided_by_rule_id) for v in Version.objects.all()}
    assert decided == {
        short_spam.pk: ("rejected", reject_spam.pk),
        short.pk: ("approved", approve_short.pk),
        long.pk: ("pending", None),
    }


@pytest.mark.django_db
def test_each_decision_records_the_rule_and_its_revision_on_the_version_and_in_the_audit():
    rule = RuleFactory(conditions=SHORT, is_active=True)
    rule = services.rule_update(rule=rule, data={"priority": 7}, actor=UserFactory())  # revision 2
    version = VersionFactory(content="tiny")

    run(rule)

    version.refresh_from_db()
    assert (version.decided_by_rule_id, version.decided_by_rule_revision) == (rule.pk, 2)
    (audit,) = AutomationAuditLog.objects.all()
    assert (audit.rule_id, audit.rule_revision, audit.decision) == (rule.pk, 2, "approved")


@pytest.mark.django_db
def test_a_leave_rule_keeps_matching_versions_for_staff_and_stops_later_rules():
    leave_tagged = RuleFactory(conditions=EVERYTHING, action="leave", priority=1, scope_tags=["legal"])
    approve_all = RuleFactory(conditions=EVERYTHING, action="approve", priority=2)
    legal = VersionFactory(tags=["legal", "typo"])
    other = VersionFactory(tags=["typo"])

    result = run(leave_tagged, approve_all)

    assert (result.claimed, result.decided) == (2, 1)
    assert Version.objects.get(pk=legal.pk).status == "pending"
    assert Version.objects.get(pk=other.pk).status == "approved"
    assert not AutomationAuditLog.objects.filter(version_id=legal.pk).exists()


@pytest.mark.django_db
def test_a_scoped_rule_decides_only_its_entity_type():
    atoms_only = RuleFactory(conditions=EVERYTHING, action="reject", scope_entity_type="atom")
    topic_version = VersionFactory()
    atom_version = VersionFactory(entity_type="atom", entity_id=1)

    run(atoms_only)

    assert Version.objects.get(pk=topic_version.pk).status == "pending"
    assert Version.objects.get(pk=atom_version.pk).status == "rejected"


@pytest.mark.django_db
def test_a_batch_runs_the_same_statements_for_one_rule_or_five():
    VersionFactory.create_batch(20, content="tiny")
    one = [RuleFactory(conditions=SHORT, priority=0)]
    five = one + [RuleFactory(conditions=SPAM, action="reject", priority=p) for p in range(1, 5)]

    def statements(rules):
        policy = Policy.of(PolicyRule.of(rule) for rule in rules)
        with CaptureQueriesContext(connection) as queries:
            automation.automation_decide_batch(policy=policy, after=None, batch_size=500, as_of=timezone.now())
        Version.objects.update(status="pending", approved=False)
        return len(queries)

    assert statements(one) == statements(five)


@pytest.mark.django_db
def test_each_deciding_rule_gets_one_activity_row_per_batch_in_one_insert():
    approve_short = RuleFactory(conditions=SHORT, priority=1)
    reject_rest = RuleFactory(conditions=EVERYTHING, action="reject", priority=2)
    short = VersionFactory.create_batch(2, content="tiny")
    long = VersionFactory(content="x" * 50)

    run(approve_short, reject_rest)

    rows = {row.action: row.metadata for row in ActivityLog.objects.filter(category="approvals", user=None)}
    assert rows == {
        "version.approve": {"ids": sorted(v.pk for v in short), "count": 2, "rule": approve_short.pk, "revision": 1},
        "version.reject": {"ids": [long.pk], "count": 1, "rule": reject_rest.pk, "revision": 1},
    }


# --- Evaluate mode ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_rule_in_evaluate_mode_decides_nothing_and_records_what_it_would_have_decided():
    trial = RuleFactory(conditions=SHORT, action="approve", mode="evaluate", is_active=True)
    short = VersionFactory(content="tiny")
    VersionFactory(content="x" * 50)

    first = run(trial)
    second = run(trial)  # still pending: evaluated again, recorded once

    assert (first.decided, first.evaluations, second.evaluations) == (0, 1, 1)
    assert set(Version.objects.values_list("status", flat=True)) == {"pending"}
    (record,) = RuleEvaluation.objects.all()
    assert (record.rule_id, record.rule_revision, record.version_id, record.would_decide) == (
        trial.pk,
        1,
        short.pk,
        "approved",
    )


@pytest.mark.django_db
def test_evaluate_mode_runs_beside_the_live_policy_each_on_its_own():
    live = RuleFactory(conditions=EVERYTHING, action="approve", priority=1)
    trial = RuleFactory(conditions=SHORT, action="reject", mode="evaluate", priority=0)
    short = VersionFactory(content="tiny")

    run(live, trial)

    assert Version.objects.get(pk=short.pk).status == "approved"  # the trial rule decided nothing
    assert RuleEvaluation.objects.get().would_decide == "rejected"


@pytest.mark.django_db
def test_the_evaluation_compares_the_rule_with_what_staff_decided_since():
    trial = RuleFactory(conditions=SHORT, action="approve", mode="evaluate", is_active=True)
    agreed, disagreed, _still_pending = VersionFactory.create_batch(3, content="tiny")
    run(trial)
    staff = UserFactory()
    services.versions_decide(version_ids=[agreed.pk], approve=True, user=staff)
    services.versions_decide(version_ids=[disagreed.pk], approve=False, user=staff)

    assert selectors.evaluation_agreement(trial.pk, revision=1) == {
        "recorded": 3,
        "compared": 2,
        "agreements": 1,
        "disagreement_rate": 0.5,
    }


@pytest.mark.django_db
def test_the_cached_policy_holds_live_and_evaluating_rules_in_order():
    second = RuleFactory(conditions=SHORT, priority=2, is_active=True, scope_tags=["typo"])
    first = RuleFactory(conditions=SPAM, action="reject", priority=1, is_active=True)
    trial = RuleFactory(conditions=SHORT, mode="evaluate", is_active=True)
    RuleFactory(conditions=SHORT, is_active=False)

    policy = selectors.active_policy_cached()
    again = selectors.active_policy_cached()  # from the cache

    assert [rule.id for rule in policy.live] == [first.pk, second.pk]
    assert [rule.id for rule in policy.evaluating] == [trial.pk]
    assert again == policy and again.live[1].scope_tags == ("typo",)
