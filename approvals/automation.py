"""The automation's writes: walk the pending backlog in batches and let the policy decide.

Per batch, two statements in one transaction, whatever the batch size or the number of rules:
1. claim the next pending versions oldest first (FOR UPDATE SKIP LOCKED) and evaluate the whole
   policy on them as one `CASE` (approvals.policy.decider_case), plus one column per rule in
   evaluate mode;
2. decide the matched versions (services.versions_decide_statement), writing their audit rows in
   the same statement;
then one INSERT of the batch's ActivityLog rows (one per deciding rule) and, with rules in
evaluate mode, one INSERT of their would-be decisions.
"""

import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.db import transaction
from django.utils import timezone

from approvals import policy as policies
from approvals.models import ApprovalRule, AutomationAuditLog, RuleEvaluation, Version
from approvals.policy import Policy, PolicyRule
from approvals.services import invalidate_pending_count_on_commit, versions_decide_statement
from project.activity import BulkAct, activity_record_bulk_many
from project.db.expressions import RowComparison

# Before any key: the smallest (created_at, id) there is.
_START_KEY = (datetime(1, 1, 1, tzinfo=UTC), 0)

# The audit rows, written by the decision statement itself. duration_ms is the statement's own
# time (evaluation and writes) per decision.
_AUDIT_CTE = """,
audit AS (
    INSERT INTO {audit} (rule_id, rule_revision, version_id, decision, reason, duration_ms, created_at)
    SELECT decided.rule_id, decided.rule_revision, decided.id,
           CASE WHEN decided.approve THEN 'approved' ELSE 'rejected' END, decided.reason,
           extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000
               / greatest((SELECT count(*) FROM decided), 1),
           now()
    FROM decided
)"""


@dataclass
class BatchResult:
    claimed: int
    decided_ids: list[int]
    last_key: tuple[datetime, int] | None
    # decision ("approved"/"rejected") -> how many of decided_ids
    decisions: dict[str, int] = field(default_factory=dict)
    evaluations: int = 0


@dataclass(frozen=True)
class _Claimed:
    version_id: int
    created_at: datetime
    decider: PolicyRule | None
    would_decide: tuple[PolicyRule, ...]


def _claim_and_evaluate(policy: Policy, *, after, batch_size: int, as_of: datetime, lock: bool) -> list[_Claimed]:
    """The batch, oldest first, each version with the live rule that decides it (first match)
    and the rules in evaluate mode that match it: one query."""
    queryset = (
        Version.objects.filter(status=Version.Status.PENDING)
        .filter(RowComparison(["created_at", "id"], ">", list(after)))
        .order_by("created_at", "id")
    )
    if lock:
        # Only the versions' rows: the author and profile joins are read, never locked.
        queryset = queryset.select_for_update(skip_locked=True, of=("self",))
    evaluation = policies.evaluation_columns(policy.evaluating, as_of=as_of)
    rows = queryset.annotate(decider=policies.decider_case(policy.live, as_of=as_of), **evaluation).values_list(
        "pk", "created_at", "decider", *evaluation
    )[:batch_size]
    return [
        _Claimed(
            version_id=pk,
            created_at=created_at,
            decider=None if decider is None else policy.live[decider],
            would_decide=tuple(rule for rule, matched in zip(policy.evaluating, matches, strict=True) if matched),
        )
        for pk, created_at, decider, *matches in rows
    ]


def automation_decide_batch(
    *, policy: Policy, after: tuple[datetime, int] | None, batch_size: int, as_of: datetime, dry_run: bool = False
) -> BatchResult:
    """Claim the next `batch_size` pending versions after the key `after` and let the policy
    decide them: one transaction. Concurrent runs share the backlog through SKIP LOCKED, and the
    status guard means no version is ever decided twice. A dry run locks and writes nothing."""
    after = after or _START_KEY
    with transaction.atomic():
        batch = _claim_and_evaluate(policy, after=after, batch_size=batch_size, as_of=as_of, lock=not dry_run)
        if not batch:
            return BatchResult(claimed=0, decided_ids=[], last_key=after)
        to_decide = [row for row in batch if row.decider is not None and row.decider.decides]
        if dry_run:
            decided_ids = [row.version_id for row in to_decide]
            evaluations = sum(len(row.would_decide) for row in batch)
        else:
            decided_ids = _decide(to_decide)
            evaluations = _record_evaluations(batch)
    decider_of = {row.version_id: row.decider for row in to_decide}
    decisions = defaultdict(int)
    for version_id in decided_ids:
        decisions[decider_of[version_id].decision] += 1
    last = batch[-1]
    return BatchResult(
        claimed=len(batch),
        decided_ids=decided_ids,
        last_key=(last.created_at, last.version_id),
        decisions=dict(decisions),
        evaluations=evaluations,
    )


def _decide(to_decide: list[_Claimed]) -> list[int]:
    if not to_decide:
        return []
    decided_ids = versions_decide_statement(
        decisions=[(row.version_id, row.decider.action == ApprovalRule.Action.APPROVE) for row in to_decide],
        open_statuses=[Version.Status.PENDING],
        user_id=None,
        rules=[(row.decider.id, row.decider.revision, row.decider.reason) for row in to_decide],
        after=_AUDIT_CTE.format(audit=AutomationAuditLog._meta.db_table),
    )[0]
    if not decided_ids:
        return []
    # The batch is one act per deciding rule (project.activity): each lists the versions it decided.
    by_rule: dict[int, list[int]] = defaultdict(list)
    rule_of = {row.version_id: row.decider for row in to_decide}
    rules_by_id = {rule.id: rule for rule in rule_of.values()}
    for version_id in decided_ids:
        by_rule[rule_of[version_id].id].append(version_id)
    activity_record_bulk_many(
        category="approvals",
        acts=[
            # The same actions a person's decisions record, without a user: the rule decided.
            BulkAct(
                action="version.approve" if rule.action == ApprovalRule.Action.APPROVE else "version.reject",
                entity_type="version",
                entity_ids=ids,
                metadata={"rule": rule.id, "revision": rule.revision},
            )
            for rule, ids in ((rules_by_id[rule_id], ids) for rule_id, ids in by_rule.items())
        ],
    )
    invalidate_pending_count_on_commit()
    return decided_ids


def _record_evaluations(batch: list[_Claimed]) -> int:
    rows = [
        RuleEvaluation(
            rule_id=rule.id, rule_revision=rule.revision, version_id=row.version_id, would_decide=rule.decision
        )
        for row in batch
        for rule in row.would_decide
    ]
    if rows:
        # A version still pending from an earlier run was recorded then: keep the first record.
        RuleEvaluation.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


@dataclass
class AutomationResult:
    rule_ids: list[int] = field(default_factory=list)
    batches: int = 0
    claimed: int = 0
    decided: int = 0
    evaluations: int = 0
    stopped_at_deadline: bool = False
    dry_run: bool = False
    sample_ids: list[int] = field(default_factory=list)


def automation_run(
    *,
    policy: Policy,
    batch_size: int,
    deadline_s: float | None,
    as_of: datetime | None = None,
    dry_run: bool = False,
    max_batches: int | None = None,
    clock=None,
    on_batch=None,
) -> AutomationResult:
    """Walk the pending backlog oldest first in batches until it is done, the deadline passes or
    `max_batches` ran.

    Stopping is between batches, so a run never leaves a batch half-done; the next run continues
    (undecided versions stay pending and are looked at again, since e.g. their age changes).
    """
    clock = clock or time.monotonic
    result = AutomationResult(dry_run=dry_run)
    if not policy:
        return result
    result.rule_ids = [rule.id for rule in policy.live + policy.evaluating]
    as_of = as_of or timezone.now()
    started = clock()
    key = None
    while max_batches is None or result.batches < max_batches:
        if deadline_s is not None and clock() - started >= deadline_s:
            result.stopped_at_deadline = True
            break
        batch_started = time.perf_counter()
        batch = automation_decide_batch(policy=policy, after=key, batch_size=batch_size, as_of=as_of, dry_run=dry_run)
        if on_batch is not None:
            on_batch(time.perf_counter() - batch_started, batch)
        if batch.claimed == 0:
            break
        result.batches += 1
        result.claimed += batch.claimed
        result.decided += len(batch.decided_ids)
        result.evaluations += batch.evaluations
        if dry_run and len(result.sample_ids) < 20:
            result.sample_ids.extend(batch.decided_ids[: 20 - len(result.sample_ids)])
        key = batch.last_key
    return result
