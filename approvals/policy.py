"""The policy: every active rule, tried in priority order; the first that matches a version decides.

A policy compiles to one SQL `CASE` (`decider_case`): for each version, the position of the first
live rule whose scope and conditions match, or NULL. `first_match` is the same in plain Python
over `VersionFacts`, the reference the property test holds the SQL to. Rules in evaluate mode
never decide; each is compiled on its own (`evaluation_columns`) so its would-be decisions can be
recorded beside the real ones.
"""

from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import reduce
from operator import or_

from django.db.models import BooleanField, Case, IntegerField, Q, Value, When

from approvals import rules
from approvals.models import ApprovalRule

DECISION_OF_ACTION = {
    ApprovalRule.Action.APPROVE: "approved",
    ApprovalRule.Action.REJECT: "rejected",
    ApprovalRule.Action.LEAVE: "left",
}


@dataclass(frozen=True)
class PolicyRule:
    """An active rule as the automation needs it (plain data: cached, compared, pickled)."""

    id: int
    revision: int
    name: str
    action: str
    conditions: dict
    priority: int = 100
    mode: str = ApprovalRule.Mode.LIVE
    scope_entity_type: str = ""
    scope_tags: tuple[str, ...] = ()

    @classmethod
    def of(cls, rule: ApprovalRule) -> "PolicyRule":
        return cls(
            id=rule.pk,
            revision=rule.revision,
            name=rule.name,
            action=rule.action,
            conditions=rule.conditions,
            priority=rule.priority,
            mode=rule.mode,
            scope_entity_type=rule.scope_entity_type or "",
            scope_tags=tuple(rule.scope_tags or ()),
        )

    @property
    def decision(self) -> str:
        return DECISION_OF_ACTION[self.action]

    @property
    def decides(self) -> bool:
        """Whether a match changes the version (approve or reject), rather than leaving it to staff."""
        return self.action != ApprovalRule.Action.LEAVE

    @property
    def reason(self) -> str:
        return f"rule {self.name!r} r{self.revision}: {rules.describe(self.conditions)}"[: rules.DESCRIBE_MAX_CHARS]

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Policy:
    """Live rules in the order they are tried, and the rules in evaluate mode."""

    live: tuple[PolicyRule, ...] = ()
    evaluating: tuple[PolicyRule, ...] = ()
    rules_by_id: dict = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, policy_rules) -> "Policy":
        ordered = sorted(policy_rules, key=lambda rule: (rule.priority, rule.id))
        return cls(
            live=tuple(rule for rule in ordered if rule.mode == ApprovalRule.Mode.LIVE),
            evaluating=tuple(rule for rule in ordered if rule.mode == ApprovalRule.Mode.EVALUATE),
            rules_by_id={rule.id: rule for rule in ordered},
        )

    def __bool__(self) -> bool:
        return bool(self.live or self.evaluating)


def scope_q(rule: PolicyRule) -> Q:
    q = Q()
    if rule.scope_entity_type:
        q &= Q(entity_type=rule.scope_entity_type)
    if rule.scope_tags:
        # Any of the tags, each as tags @> '["tag"]' (as the rules' `contains`): `?|` would also
        # match an object's keys or a bare string, which are not tags.
        q &= reduce(or_, (Q(tags__contains=[tag]) for tag in rule.scope_tags))
    return q


def rule_q(rule: PolicyRule, *, as_of: datetime) -> Q:
    """Scope and conditions of one rule as a Q on Version."""
    return scope_q(rule) & rules.compile_conditions(rule.conditions, as_of=as_of)


def decider_case(live_rules: tuple[PolicyRule, ...], *, as_of: datetime) -> Case | Value:
    """Position in `live_rules` of the first rule matching each version, NULL when none does."""
    if not live_rules:
        return Value(None, output_field=IntegerField())
    return Case(
        *(When(rule_q(rule, as_of=as_of), then=Value(position)) for position, rule in enumerate(live_rules)),
        default=None,
        output_field=IntegerField(),
    )


def evaluation_columns(evaluating: tuple[PolicyRule, ...], *, as_of: datetime) -> dict[str, Case]:
    """One boolean column per rule in evaluate mode: eval_<position> says whether it matches."""
    return {
        f"eval_{position}": Case(
            When(rule_q(rule, as_of=as_of), then=Value(True)), default=Value(False), output_field=BooleanField()
        )
        for position, rule in enumerate(evaluating)
    }


# --- The reference ---------------------------------------------------------------------------------------


def rule_matches(rule: PolicyRule, facts: rules.VersionFacts) -> bool:
    if rule.scope_entity_type and facts.entity_type != rule.scope_entity_type:
        return False
    if rule.scope_tags and not set(rule.scope_tags) & set(facts.tags):
        return False
    return rules.evaluate_conditions(rule.conditions, facts)


def first_match(live_rules, facts: rules.VersionFacts) -> PolicyRule | None:
    """The reference for decider_case: the first rule, in order, matching the version."""
    return next((rule for rule in live_rules if rule_matches(rule, facts)), None)


def validate_scope(*, entity_type: str, tags: object) -> None:
    """Raise RuleInvalid unless the scope is an entity type (or "") and a list of short strings."""
    if entity_type and entity_type not in ("topic", "atom"):
        raise rules.RuleInvalid("scope_entity_type", "one of: topic, atom (or empty for both)")
    if not isinstance(tags, list) or not all(isinstance(tag, str) and 0 < len(tag) <= 100 for tag in tags):
        raise rules.RuleInvalid("scope_tags", "a list of tags, each 1 to 100 characters")
    if len(tags) > rules.MAX_IN_VALUES:
        raise rules.RuleInvalid("scope_tags", f"at most {rules.MAX_IN_VALUES} tags")
    for tag in tags:
        rules.check_string(tag, "scope_tags")
