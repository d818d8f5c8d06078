"""A job's rules JSON: defaults, and errors that name the path of what is wrong."""

from decimal import Decimal

import pytest

from reconciliation.engine.rules import MatchingRules, parse_rules
from reconciliation.errors import InvalidRules


def test_an_empty_document_takes_every_default():
    assert parse_rules({}) == MatchingRules()
    assert parse_rules(None).tolerance.amount_abs == Decimal("1.00")


def test_given_values_override_the_defaults():
    rules = parse_rules(
        {
            "date_window_days": 5,
            "passes": {
                "tolerance": {"amount_abs": "0.05", "weights": {"date": 0}},
                "group": {"key": "counterparty", "max_group_size": 3},
            },
        }
    )
    assert rules.date_window_days == 5
    assert rules.tolerance.amount_abs == Decimal("0.05")
    assert rules.tolerance.weights["date"] == 0 and rules.tolerance.weights["reference"] == 0.35
    assert (rules.group.key, rules.group.max_group_size) == ("counterparty", 3)


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"date_window_days": 40}, "date_window_days"),
        ({"auto_threshold": 1.5}, "auto_threshold"),
        ({"passes": {"tolerance": {"amount_pct": -1}}}, "passes.tolerance.amount_pct"),
        ({"passes": {"tolerance": {"amount_abs": "a lot"}}}, "passes.tolerance.amount_abs"),
        ({"passes": {"group": {"max_group_size": 1}}}, "passes.group.max_group_size"),
        ({"passes": {"group": {"key": "amount"}}}, "passes.group.key"),
        ({"passes": {"fuzzy": {}}}, "passes"),
        (
            {"passes": {"tolerance": {"weights": {"amount": 0, "date": 0, "reference": 0, "counterparty": 0}}}},
            "passes.tolerance.weights",
        ),
        ({"auto_threshold": 0.5, "review_threshold": 0.7}, "review_threshold"),
        ([], "rules"),
    ],
)
def test_errors_name_the_path_of_the_bad_value(raw, path):
    with pytest.raises(InvalidRules) as raised:
        parse_rules(raw)
    assert path in raised.value.errors
