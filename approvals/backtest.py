"""Backtest: what a policy (or one rule) would have decided on the versions already decided.

One aggregate query over the decided versions of the last N days: the policy's `CASE` names the
deciding rule of each version, and the counts compare its action with what actually happened.
Versions are evaluated as they are now (`as_of` is the backtest's moment): ages are today's
ages, and "earlier approved versions" counts what is approved now.

- agreement: it would approve what is approved, or reject what is rejected;
- false approval: it would approve what staff rejected or reverted;
- false rejection: it would reject what is approved.
"""

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count
from django.utils import timezone

from approvals.models import ApprovalRule, Version
from approvals.policy import PolicyRule, decider_case

MAX_BACKTEST_DAYS = 366
DECIDED = (Version.Status.APPROVED, Version.Status.REJECTED, Version.Status.REVERTED)


@dataclass
class BacktestCounts:
    would_decide: int = 0  # approve or reject (a "leave" match decides nothing)
    would_approve: int = 0
    would_reject: int = 0
    left_for_staff: int = 0
    agreements: int = 0
    false_approvals: int = 0
    false_rejections: int = 0

    @property
    def agreement_rate(self) -> float | None:
        return self.agreements / self.would_decide if self.would_decide else None

    def add(self, other: "BacktestCounts") -> None:
        for name in asdict(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict:
        return asdict(self) | {"agreement_rate": self.agreement_rate}


@dataclass
class Backtest:
    days: int
    evaluated: int  # decided versions in the window
    total: BacktestCounts
    # rule id -> its counts, for the versions it would have decided first
    by_rule: dict[int, BacktestCounts] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "days": self.days,
            "evaluated": self.evaluated,
            **self.total.as_dict(),
            "by_rule": [{"rule_id": rule_id, **counts.as_dict()} for rule_id, counts in self.by_rule.items()],
        }


def counts_for(action: str, status: str) -> BacktestCounts:
    """The reference tally of one version: what `action` would have done to one with `status`."""
    counts = BacktestCounts()
    if action == ApprovalRule.Action.LEAVE:
        counts.left_for_staff = 1
        return counts
    approve = action == ApprovalRule.Action.APPROVE
    counts.would_decide = 1
    counts.would_approve, counts.would_reject = int(approve), int(not approve)
    if approve:
        counts.agreements = int(status == Version.Status.APPROVED)
        counts.false_approvals = int(status in (Version.Status.REJECTED, Version.Status.REVERTED))
    else:
        counts.agreements = int(status == Version.Status.REJECTED)
        counts.false_rejections = int(status == Version.Status.APPROVED)
    return counts


def policy_backtest(policy_rules: list[PolicyRule], *, days: int, as_of: datetime | None = None) -> Backtest:
    """Run `policy_rules` (in the order given: priority order for a policy) over the versions
    decided in the last `days` days. One query: a GROUP BY over the deciding rule and the status."""
    as_of = as_of or timezone.now()
    ordered = tuple(policy_rules)
    decided = Version.objects.filter(status__in=DECIDED, decided_at__gte=as_of - timedelta(days=days))
    rows = (
        decided.annotate(decider=decider_case(ordered, as_of=as_of))
        .order_by()
        .values("decider", "status")
        .annotate(versions=Count("pk"))
    )
    backtest = Backtest(days=days, evaluated=0, total=BacktestCounts())
    for row in rows:
        backtest.evaluated += row["versions"]
        if row["decider"] is None:
            continue
        rule = ordered[row["decider"]]
        counts = counts_for(rule.action, row["status"])
        for name in asdict(counts):
            setattr(counts, name, getattr(counts, name) * row["versions"])
        backtest.by_rule.setdefault(rule.id, BacktestCounts()).add(counts)
        backtest.total.add(counts)
    return backtest
