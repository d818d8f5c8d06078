"""The policy: many active rules, first match in priority order decides, one CASE in SQL equal to
the Python reference for whole policies; and the backtest over decided versions."""

from datetime import timedelta

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from approvals import backtest
from approvals.models import Version
from approvals.policy import Policy, PolicyRule, decider_case, first_match
from approvals.rules import RuleInvalid
from tests.approvals.test_rules import AS_OF, TAGS, build_dataset, dataset_facts, rule_strategy

SCOPE_TAGS = sorted(
    {tag for tags in TAGS if isinstance(tags, list) for tag in tags if isinstance(tag, str)} | {"absent"}
)


def policy_strategy(facts: list) -> st.SearchStrategy:
    """1 to 5 live rules, each with an action, a priority and an optional scope."""
    one_rule = st.builds(
        lambda conditions, action, priority, entity_type, tags: (conditions, action, priority, entity_type, tags),
        rule_strategy(facts),
        st.sampled_from(["approve", "reject", "leave"]),
        st.integers(0, 3),  # ties happen: then id order decides
        st.sampled_from(["", "topic", "atom"]),
        st.lists(st.sampled_from(SCOPE_TAGS), max_size=2, unique=True),
    )
    return st.lists(one_rule, min_size=1, max_size=5).map(
        lambda specs: Policy.of(
            PolicyRule(
                id=position + 1,
                revision=1,
                name=f"rule {position + 1}",
                action=action,
                conditions=conditions,
                priority=priority,
                scope_entity_type=entity_type,
                scope_tags=tuple(tags),
            )
            for position, (conditions, action, priority, entity_type, tags) in enumerate(specs)
        )
    )


@pytest.mark.django_db
def test_the_policy_case_in_sql_names_the_same_deciding_rule_as_the_python_reference():
    ids = build_dataset()
    facts = dataset_facts(ids)
    dataset = Version.objects.filter(pk__in=ids)
    seen = {"undecided": 0, "decided_by_a_later_rule": 0}

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        # Whole policies are up to five generated rules: more data per example than one rule.
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )
    @given(policy_strategy(list(facts.values())))
    def check(policy):
        expected = {pk: first_match(policy.live, version) for pk, version in facts.items()}
        with transaction.atomic():
            rows = dict(dataset.annotate(decider=decider_case(policy.live, as_of=AS_OF)).values_list("pk", "decider"))
        actual = {pk: None if position is None else policy.live[position] for pk, position in rows.items()}
        assert actual == expected
        seen["undecided"] += sum(rule is None for rule in actual.values())
        seen["decided_by_a_later_rule"] += sum(rule is not None and rule != policy.live[0] for rule in actual.values())

    check()
    # Not vacuous: some versions fell through every rule, others were decided past the first rule.
    assert seen["undecided"] > 0 and seen["decided_by_a_later_rule"] > 0


def test_rules_are_tried_in_priority_order_then_id_order():
    rules = [
        PolicyRule(id=3, revision=1, name="c", action="approve", conditions={}, priority=5),
        PolicyRule(id=1, revision=1, name="a", action="reject", conditions={}, priority=10),
        PolicyRule(id=2, revision=1, name="b", action="leave", conditions={}, priority=5),
        PolicyRule(id=4, revision=1, name="d", action="approve", conditions={}, priority=1, mode="evaluate"),
    ]
    policy = Policy.of(rules)
    assert [rule.id for rule in policy.live] == [2, 3, 1]
    assert [rule.id for rule in policy.evaluating] == [4]


def test_an_empty_policy_is_falsy_and_evaluating_rules_alone_make_it_truthy():
    assert not Policy.of([])
    assert Policy.of([PolicyRule(id=1, revision=1, name="e", action="approve", conditions={}, mode="evaluate")])


@pytest.mark.parametrize(
    ("entity_type", "tags", "path"),
    [("page", [], "scope_entity_type"), ("", "spam", "scope_tags"), ("", [""], "scope_tags"), ("", [1], "scope_tags")],
)
def test_an_invalid_scope_is_refused_naming_the_field(entity_type, tags, path):
    from approvals.policy import validate_scope

    with pytest.raises(RuleInvalid) as error:
        validate_scope(entity_type=entity_type, tags=tags)
    assert error.value.path == path


# --- Backtest ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_backtest_counts_equal_the_reference_tally_for_whole_policies():
    ids = build_dataset()
    Version.objects.filter(pk__in=ids).exclude(status="pending").update(decided_at=AS_OF - timedelta(days=1))
    facts = dataset_facts(ids)
    status = dict(Version.objects.filter(pk__in=ids).values_list("pk", "status"))
    decided = {pk for pk, value in status.items() if value != "pending"}
    assert decided and len(decided) < len(ids)
    outcomes = []

    @settings(
        max_examples=60,
        deadline=None,
        database=None,
        # Whole policies are up to five generated rules: more data per example than one rule.
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )
    @given(policy_strategy(list(facts.values())))
    def check(policy):
        expected = backtest.BacktestCounts()
        for pk in decided:
            rule = first_match(policy.live, facts[pk])
            if rule is not None:
                expected.add(backtest.counts_for(rule.action, status[pk]))
        with transaction.atomic():
            result = backtest.policy_backtest(policy.live, days=7, as_of=AS_OF)
        assert result.evaluated == len(decided)
        assert result.total == expected
        outcomes.append(expected)

    check()
    assert any(o.false_approvals for o in outcomes) and any(o.false_rejections for o in outcomes)
    assert any(o.agreements for o in outcomes)


@pytest.mark.django_db
def test_the_backtest_reads_only_the_window_and_is_one_query(django_assert_num_queries):
    ids = build_dataset()
    Version.objects.filter(pk__in=ids).exclude(status="pending").update(decided_at=AS_OF - timedelta(days=10))
    everything = PolicyRule(
        id=1,
        revision=1,
        name="all",
        action="approve",
        conditions={"all": [{"field": "content_length", "op": "gte", "value": 0}]},
    )

    with django_assert_num_queries(1):
        recent = backtest.policy_backtest([everything], days=7, as_of=AS_OF)
    wider = backtest.policy_backtest([everything], days=11, as_of=AS_OF)

    assert recent.evaluated == 0
    assert wider.evaluated == wider.total.would_approve > 0
    assert wider.by_rule[1] == wider.total


def test_a_false_approval_is_approving_what_staff_rejected_or_reverted():
    assert backtest.counts_for("approve", "rejected").false_approvals == 1
    assert backtest.counts_for("approve", "reverted").false_approvals == 1
    assert backtest.counts_for("approve", "approved").agreements == 1
    assert backtest.counts_for("reject", "approved").false_rejections == 1
    assert backtest.counts_for("reject", "rejected").agreements == 1
    left = backtest.counts_for("leave", "approved")
    assert (left.left_for_staff, left.would_decide) == (1, 0)
