"""Writes in the approvals app: proposals, decisions (human and automated), reverts, rules."""

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import F
from django.db.models.expressions import RawSQL
from django.db.models.functions import Now
from django.utils import timezone

from approvals import ratelimit, rules
from approvals.exceptions import EntityNotFound, NotDecidable, VersionsNotFound
from approvals.models import ApprovalRule, Atom, AuthorProfile, AutomationAuditLog, EntityType, Topic, Version
from approvals.selectors import ACTIVE_RULE_CACHE_KEY, PENDING_COUNT_CACHE_KEY
from project.activity import activity_record, activity_record_bulk
from project.db.expressions import RowComparison
from project.models import ActivityLog

ENTITY_MODELS = {EntityType.TOPIC: Topic, EntityType.ATOM: Atom}
_record = partial(activity_record, category="approvals")
# A person may decide a version that is pending, or one whose earlier decision was reverted.
OPEN_FOR_STAFF = (Version.Status.PENDING, Version.Status.REVERTED)


def _invalidate_pending_count_on_commit() -> None:
    # robust: the write has committed; a failed delete (Redis away) is logged, never an error.
    transaction.on_commit(lambda: cache.delete(PENDING_COUNT_CACHE_KEY), robust=True)


def _invalidate_active_rule_on_commit() -> None:
    transaction.on_commit(lambda: cache.delete(ACTIVE_RULE_CACHE_KEY), robust=True)


# --- Authors -------------------------------------------------------------------------------------------


@transaction.atomic
def author_trust_set(*, user, trust_level: int, actor, request=None) -> AuthorProfile:
    """Set what rules know as author.trust_level (0 without a profile)."""
    profile, _ = AuthorProfile.objects.update_or_create(user=user, defaults={"trust_level": trust_level})
    _record(
        action="author.trust",
        user=actor,
        entity_type="user",
        entity_id=user.pk,
        metadata={"trust_level": trust_level},
        request=request,
    )
    return profile


# --- Entities and proposals -----------------------------------------------------------------------


@transaction.atomic
def entity_create(*, entity_type: str, title: str, body: str, author, request=None):
    entity = ENTITY_MODELS[entity_type].objects.create(title=title, body=body, author=author)
    _record(
        action=f"{entity_type}.create",
        user=author,
        entity_type=entity_type,
        entity_id=entity.pk,
        request=request,
    )
    return entity


def entity_delete(*, entity, actor, request=None) -> None:
    entity_type = EntityType.TOPIC if isinstance(entity, Topic) else EntityType.ATOM
    entities_delete(entity_type=entity_type, entity_ids=[entity.pk], actor=actor, request=request)


@transaction.atomic
def entities_delete(*, entity_type: str, entity_ids: list[int], actor, request=None) -> None:
    """Delete entities and their pending versions (decided ones stay, as history): set-based."""
    ids = sorted(set(entity_ids))
    Version.objects.filter(entity_type=entity_type, entity_id__in=ids, status=Version.Status.PENDING).delete()
    ENTITY_MODELS[entity_type].objects.filter(pk__in=ids).delete()
    _invalidate_pending_count_on_commit()
    activity_record_bulk(
        category="approvals",
        action=f"{entity_type}.delete",
        user=actor,
        entity_type=entity_type,
        entity_ids=ids,
        request=request,
    )


@transaction.atomic
def version_propose(
    *, entity_type: str, entity_id: int, title: str, content: str, tags: list[str], author, request=None
) -> Version:
    """Propose new content for a topic or atom; it changes only once the version is approved."""
    if not ENTITY_MODELS[entity_type].objects.filter(pk=entity_id).exists():
        raise EntityNotFound(f"No {entity_type} with id {entity_id}.")
    version = Version.objects.create(
        entity_type=entity_type, entity_id=entity_id, title=title, content=content, tags=tags, author=author
    )
    _invalidate_pending_count_on_commit()
    _record(
        action="version.propose",
        user=author,
        entity_type="version",
        entity_id=version.pk,
        metadata={"entity": f"{entity_type}:{entity_id}"},
        request=request,
    )
    return version


# --- One statement decides a set of versions ---------------------------------------------------------

# Decides the versions in %(ids)s that are in one of the open statuses, in one statement: it locks
# them, remembers each entity's current title and body on the approved versions (so a revert can
# restore them), applies the newest approved version per entity, and updates the versions. It
# returns the decided ids and every locked version's status (for what was missing or decided). An
# appended CTE (`{after}`) lets the automation write its audit rows in the same statement. The ids
# arrive as one array, so the planner knows how many rows to expect and reads them by primary key.
_DECIDE_SQL = """
WITH locked AS (
    -- Row locks in id order (no deadlock between two bulk decisions). FOR UPDATE waits for a
    -- concurrent decision and then reads the row as it committed, so everything below sees the
    -- current status, never this statement's older snapshot.
    SELECT v.id, v.status, v.entity_type, v.entity_id, v.title, v.content, v.created_at
    FROM {versions} AS v
    WHERE v.id = ANY(%(ids)s::bigint[])
    ORDER BY v.id
    FOR UPDATE
),
target AS (
    SELECT l.id, l.entity_type, l.entity_id, l.title, l.content, l.created_at,
           coalesce(topic.title, atom.title) AS entity_title, coalesce(topic.body, atom.body) AS entity_body
    FROM locked AS l
    LEFT JOIN {topics} AS topic ON l.entity_type = 'topic' AND topic.id = l.entity_id
    LEFT JOIN {atoms} AS atom ON l.entity_type = 'atom' AND atom.id = l.entity_id
    WHERE l.status = ANY(%(open)s::text[])
),
newest AS (
    SELECT DISTINCT ON (entity_type, entity_id) id, entity_type, entity_id, title, content
    FROM target
    WHERE %(approve)s
    ORDER BY entity_type, entity_id, created_at DESC, id DESC
),
applied_topics AS (
    UPDATE {topics} AS e SET title = n.title, body = n.content, updated_at = now()
    FROM newest AS n WHERE n.entity_type = 'topic' AND e.id = n.entity_id
),
applied_atoms AS (
    UPDATE {atoms} AS e SET title = n.title, body = n.content, updated_at = now()
    FROM newest AS n WHERE n.entity_type = 'atom' AND e.id = n.entity_id
),
decided AS (
    UPDATE {versions} AS v
    SET status = %(status)s, approved = %(approve)s, decided_by_id = %(user_id)s, decided_by_rule_id = %(rule_id)s,
        decided_at = now(), decision_reason = %(reason)s,
        replaced_title = CASE WHEN %(approve)s THEN t.entity_title END,
        replaced_content = CASE WHEN %(approve)s THEN t.entity_body END
    FROM target AS t
    WHERE v.id = t.id AND v.id = ANY(%(ids)s::bigint[])
    RETURNING v.id
){after}
SELECT (SELECT coalesce(array_agg(id ORDER BY id), '{{}}') FROM decided),
       (SELECT coalesce(jsonb_object_agg(id, status), '{{}}') FROM locked)
"""


def _decide_statement(*, after: str = "") -> str:
    return _DECIDE_SQL.format(
        after=after, versions=Version._meta.db_table, topics=Topic._meta.db_table, atoms=Atom._meta.db_table
    )


def _decide_params(*, approve: bool, open_statuses, user_id, rule_id, reason: str) -> dict:
    return {
        "open": list(open_statuses),
        "approve": approve,
        "status": Version.Status.APPROVED if approve else Version.Status.REJECTED,
        "user_id": user_id,
        "rule_id": rule_id,
        "reason": reason,
    }


# --- Human decisions --------------------------------------------------------------------------------


@dataclass
class Decision:
    decided: list[int] = field(default_factory=list)
    already_decided: list[int] = field(default_factory=list)


@transaction.atomic
def versions_decide(
    *, version_ids: list[int], approve: bool, user, reason: str = "", request=None, single: bool = False
) -> Decision:
    """Approve or reject versions in one transaction: all or nothing.

    Unknown ids fail the whole call (VersionsNotFound); versions already decided are reported in
    `already_decided` and left alone (with single=True that is NotDecidable). The decisions count
    against the user's per-minute budget (approvals and rejections separately), in versions.
    """
    ids = sorted(set(version_ids))
    params = _decide_params(approve=approve, open_statuses=OPEN_FOR_STAFF, user_id=user.pk, rule_id=None, reason=reason)
    with connection.cursor() as cursor:
        cursor.execute(_decide_statement(), {**params, "ids": ids})
        decided, statuses_json = cursor.fetchone()
    statuses = json.loads(statuses_json)  # Django has psycopg return jsonb as text
    # Anything refused from here on raises inside the transaction: nothing decided above is kept.
    missing = [version_id for version_id in ids if str(version_id) not in statuses]
    if missing:
        raise VersionsNotFound(missing)
    decision = Decision(decided=list(decided), already_decided=sorted(set(ids) - set(decided)))
    if single and decision.already_decided:
        raise NotDecidable(f"Version {ids[0]} is already {statuses[str(ids[0])]}.")
    if not decision.decided:
        return decision
    action = "approval" if approve else "rejection"
    budget_key = ratelimit.consume(user_id=user.pk, action=action, amount=len(decision.decided))
    try:
        activity_record_bulk(
            category="approvals",
            action="version.approve" if approve else "version.reject",
            user=user,
            entity_type="version",
            entity_ids=decision.decided,
            metadata={"reason": reason},
            request=request,
        )
    except Exception:
        ratelimit.refund(budget_key, len(decision.decided))
        raise
    _invalidate_pending_count_on_commit()
    return decision


@transaction.atomic
def version_revert(*, version_id: int, user, reason: str = "", request=None) -> Version:
    """Undo an approval or rejection (automated or human). Counts toward the false-positive rate.

    An approved version's entity gets its previous title and body back, unless a newer version
    has been applied since (then the entity is left as it is).
    """
    try:
        version = Version.objects.select_for_update().get(pk=version_id)
    except Version.DoesNotExist:
        raise VersionsNotFound([version_id]) from None
    if version.status not in (Version.Status.APPROVED, Version.Status.REJECTED):
        raise NotDecidable(f"Only an approved or rejected version can be reverted; this one is {version.status}.")
    if version.status == Version.Status.APPROVED and version.replaced_title is not None:
        ENTITY_MODELS[version.entity_type].objects.filter(
            pk=version.entity_id, title=version.title, body=version.content
        ).update(title=version.replaced_title, body=version.replaced_content, updated_at=Now())
    previous = version.status
    version.status, version.approved = Version.Status.REVERTED, False
    version.reverted_by, version.reverted_at = user, timezone.now()
    version.save(update_fields=["status", "approved", "reverted_by", "reverted_at"])
    _invalidate_pending_count_on_commit()
    _record(
        action="version.revert",
        user=user,
        entity_type="version",
        entity_id=version.pk,
        metadata={"reason": reason, "reverted": previous, "by_rule": version.decided_by_rule_id},
        request=request,
    )
    return version


# --- Rules ------------------------------------------------------------------------------------------


@transaction.atomic
def rule_create(*, name: str, conditions: dict, action: str, is_active: bool = False, actor, request=None):
    rules.validate_conditions(conditions)
    if is_active:
        ApprovalRule.objects.filter(is_active=True).update(is_active=False)
    rule = ApprovalRule.objects.create(name=name, conditions=conditions, action=action, is_active=is_active)
    _invalidate_active_rule_on_commit()
    _record(
        action="rule.create",
        user=actor,
        entity_type="rule",
        entity_id=rule.pk,
        request=request,
    )
    return rule


@transaction.atomic
def rule_update(*, rule: ApprovalRule, data: dict, actor, request=None) -> ApprovalRule:
    """Change a rule; every change bumps its revision, so audit rows name the wording that fired."""
    if "conditions" in data:
        rules.validate_conditions(data["conditions"])
    if data.get("is_active"):
        ApprovalRule.objects.filter(is_active=True).exclude(pk=rule.pk).update(is_active=False)
    for name, value in data.items():
        setattr(rule, name, value)
    rule.revision = F("revision") + 1
    rule.save()
    rule.refresh_from_db()
    _invalidate_active_rule_on_commit()
    _record(
        action="rule.update",
        user=actor,
        entity_type="rule",
        entity_id=rule.pk,
        metadata={"fields": sorted(data), "revision": rule.revision},
        request=request,
    )
    return rule


def rule_set_active(*, rule: ApprovalRule, active: bool, actor, request=None) -> ApprovalRule:
    return rule_update(rule=rule, data={"is_active": active}, actor=actor, request=request)


@transaction.atomic
def rule_delete(*, rule: ApprovalRule, actor, request=None) -> None:
    rule_id = rule.pk
    rule.delete()
    _invalidate_active_rule_on_commit()
    _record(
        action="rule.delete",
        user=actor,
        entity_type="rule",
        entity_id=rule_id,
        request=request,
    )


# --- Automation -------------------------------------------------------------------------------------

# The automation's batch, statement 1: claim the next pending versions oldest first (SKIP
# LOCKED: rows another run or a person holds are left to them) and evaluate the rule on them.
# The locks are held to the end of the batch's transaction.
_CLAIM_AND_MATCH_SQL = """
WITH claimed AS (
    SELECT id, created_at FROM {versions}
    WHERE status = 'pending' AND (created_at, id) > (%(after_created_at)s, %(after_id)s)
    ORDER BY created_at, id
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
)
SELECT (SELECT count(*) FROM claimed),
       (SELECT created_at FROM claimed ORDER BY created_at DESC, id DESC LIMIT 1),
       (SELECT id FROM claimed ORDER BY created_at DESC, id DESC LIMIT 1),
       (SELECT coalesce(array_agg(pk), '{{}}') FROM ({matching}) AS matching)
"""
# Statement 2 is the decision statement, with the audit rows and the batch's ActivityLog row
# written in it too. duration_ms is the statement's own time (evaluation and writes) per decision.
_AUDIT_CTE = """,
audit AS (
    INSERT INTO {audit} (rule_id, rule_revision, version_id, decision, reason, duration_ms, created_at)
    SELECT %(rule_id)s, %(rule_revision)s, decided.id, %(decision)s, %(reason)s,
           extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000
               / greatest((SELECT count(*) FROM decided), 1),
           now()
    FROM decided
),
activity AS (
    -- The batch is one act (project.activity): one ActivityLog row lists the versions it decided.
    INSERT INTO {activity}
        (user_id, category, action, level, entity_type, entity_id, metadata, tags, ip, created_at)
    SELECT NULL, 'approvals', %(activity_action)s, 'info', 'version', '',
           jsonb_build_object('ids', jsonb_agg(decided.id ORDER BY decided.id), 'count', count(*),
                              'rule', %(rule_id)s, 'revision', %(rule_revision)s),
           '[]'::jsonb, NULL, now()
    FROM decided
    HAVING count(*) > 0
)"""
# Before any key: the smallest (created_at, id) there is.
_START_KEY = (datetime(1, 1, 1, tzinfo=UTC), 0)


@dataclass(frozen=True)
class ActiveRule:
    id: int
    revision: int
    name: str
    action: str
    conditions: dict


@dataclass
class BatchResult:
    claimed: int
    decided_ids: list[int]
    last_key: tuple[datetime, int] | None


def automation_decide_batch(
    *, rule: ActiveRule, after: tuple[datetime, int] | None, batch_size: int, as_of: datetime, dry_run: bool = False
) -> BatchResult:
    """Claim the next `batch_size` pending versions after the key `after` and decide those the
    rule matches: one statement, one transaction. Concurrent runs share the backlog through
    SKIP LOCKED, and the status guard means no version is ever decided twice."""
    after_created_at, after_id = after or _START_KEY
    if dry_run:
        return _automation_preview_batch(
            rule=rule, after=(after_created_at, after_id), batch_size=batch_size, as_of=as_of
        )
    matching = rules.matching_versions(
        Version.objects.filter(pk__in=RawSQL("SELECT id FROM claimed", ())), rule.conditions, as_of=as_of
    )
    matching_sql, matching_params = matching.values("pk").query.sql_with_params()
    # The compiled rule speaks positional %s; the statement speaks %(name)s: name its parameters.
    named = {f"rule_param_{index}": value for index, value in enumerate(matching_params)}
    matching_sql = matching_sql.replace("%%", "%%%%") % tuple(f"%({name})s" for name in named)
    approve = rule.action == ApprovalRule.Action.APPROVE
    reason = f"rule {rule.name!r} r{rule.revision}: {rules.describe(rule.conditions)}"[:500]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            _CLAIM_AND_MATCH_SQL.format(versions=Version._meta.db_table, matching=matching_sql),
            {"after_created_at": after_created_at, "after_id": after_id, "batch_size": batch_size, **named},
        )
        claimed, last_created_at, last_id, matched_ids = cursor.fetchone()
        decided_ids = []
        if matched_ids:
            params = _decide_params(
                approve=approve, open_statuses=[Version.Status.PENDING], user_id=None, rule_id=rule.id, reason=reason
            )
            cursor.execute(
                _decide_statement(
                    after=_AUDIT_CTE.format(
                        audit=AutomationAuditLog._meta.db_table, activity=ActivityLog._meta.db_table
                    )
                ),
                {
                    **params,
                    "ids": matched_ids,
                    "rule_revision": rule.revision,
                    "decision": "approved" if approve else "rejected",
                    # The same actions a person's decisions record, without a user: the rule decided.
                    "activity_action": "version.approve" if approve else "version.reject",
                },
            )
            decided_ids = list(cursor.fetchone()[0])
        if decided_ids:
            _invalidate_pending_count_on_commit()
    last_key = (last_created_at, last_id) if claimed else after
    return BatchResult(claimed=claimed, decided_ids=decided_ids, last_key=last_key)


def _automation_preview_batch(*, rule: ActiveRule, after, batch_size: int, as_of: datetime) -> BatchResult:
    """What a batch would decide, without locking or writing anything."""
    batch = list(
        Version.objects.filter(status=Version.Status.PENDING)
        .filter(RowComparison(["created_at", "id"], ">", list(after)))
        .order_by("created_at", "id")
        .values_list("created_at", "id")[:batch_size]
    )
    if not batch:
        return BatchResult(claimed=0, decided_ids=[], last_key=after)
    matching = rules.matching_versions(
        Version.objects.filter(pk__in=[pk for _, pk in batch]), rule.conditions, as_of=as_of
    )
    return BatchResult(claimed=len(batch), decided_ids=list(matching.values_list("pk", flat=True)), last_key=batch[-1])


@dataclass
class AutomationResult:
    rule_id: int | None = None
    rule_revision: int | None = None
    batches: int = 0
    claimed: int = 0
    decided: int = 0
    stopped_at_deadline: bool = False
    dry_run: bool = False
    sample_ids: list[int] = field(default_factory=list)


def automation_run(
    *,
    rule: ActiveRule | None,
    batch_size: int,
    deadline_s: float | None,
    as_of: datetime | None = None,
    dry_run: bool = False,
    clock=None,
    on_batch=None,
) -> AutomationResult:
    """Walk the pending backlog oldest first in batches until it is done or the deadline passes.

    Stopping is between batches, so a run never leaves a batch half-done; the next run continues
    (undecided versions stay pending and are looked at again, since e.g. their age changes).
    """
    clock = clock or time.monotonic
    result = AutomationResult(dry_run=dry_run)
    if rule is None:
        return result
    result.rule_id, result.rule_revision = rule.id, rule.revision
    as_of = as_of or timezone.now()
    started = clock()
    key = None
    while True:
        if deadline_s is not None and clock() - started >= deadline_s:
            result.stopped_at_deadline = True
            break
        batch_started = time.perf_counter()
        batch = automation_decide_batch(rule=rule, after=key, batch_size=batch_size, as_of=as_of, dry_run=dry_run)
        if on_batch is not None:
            on_batch(time.perf_counter() - batch_started, batch)
        if batch.claimed == 0:
            break
        result.batches += 1
        result.claimed += batch.claimed
        result.decided += len(batch.decided_ids)
        if dry_run and len(result.sample_ids) < 20:
            result.sample_ids.extend(batch.decided_ids[: 20 - len(result.sample_ids)])
        key = batch.last_key
    return result
