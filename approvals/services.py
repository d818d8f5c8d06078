"""Writes in the approvals app: proposals, decisions (human and automated), reverts, rules."""

import json
from dataclasses import dataclass, field
from functools import partial

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone

from approvals import policy, ratelimit, rules
from approvals.exceptions import EntityNotFound, NotDecidable, VersionsNotFound
from approvals.models import ApprovalRule, Atom, AuthorProfile, EntityType, Topic, Version
from approvals.selectors import PENDING_COUNT_CACHE_KEY, POLICY_CACHE_KEY
from project.activity import activity_record, activity_record_bulk

ENTITY_MODELS = {EntityType.TOPIC: Topic, EntityType.ATOM: Atom}
_record = partial(activity_record, category="approvals")
# A person may decide a version that is pending, or one whose earlier decision was reverted.
OPEN_FOR_STAFF = (Version.Status.PENDING, Version.Status.REVERTED)


def invalidate_pending_count_on_commit() -> None:
    # robust: the write has committed; a failed delete (Redis away) is logged, never an error.
    transaction.on_commit(lambda: cache.delete(PENDING_COUNT_CACHE_KEY), robust=True)


def _invalidate_policy_on_commit() -> None:
    transaction.on_commit(lambda: cache.delete(POLICY_CACHE_KEY), robust=True)


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
    invalidate_pending_count_on_commit()
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
    invalidate_pending_count_on_commit()
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

# Decides a set of versions in one statement: `decisions` pairs each id with approve/reject and,
# for the automation, the rule (and its revision and reason) that decided it. Only versions in one
# of the open statuses are decided. The statement locks them, remembers each entity's current
# title and body on the approved versions (so a revert can restore them), applies the newest
# approved version per entity, and updates the versions. It returns the decided ids and every
# locked version's status (for what was missing or decided). An appended CTE (`{after}`) lets the
# automation write its audit rows in the same statement. The ids arrive as arrays, so the planner
# knows how many rows to expect and reads them by primary key.
_DECIDE_SQL = """
WITH decision AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(approves)s::boolean[], %(rule_ids)s::bigint[],
                         %(rule_revisions)s::integer[], %(reasons)s::text[])
        AS d(id, approve, rule_id, rule_revision, reason)
),
locked AS (
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
           d.approve, d.rule_id, d.rule_revision, d.reason,
           coalesce(topic.title, atom.title) AS entity_title, coalesce(topic.body, atom.body) AS entity_body
    FROM locked AS l
    JOIN decision AS d ON d.id = l.id
    LEFT JOIN {topics} AS topic ON l.entity_type = 'topic' AND topic.id = l.entity_id
    LEFT JOIN {atoms} AS atom ON l.entity_type = 'atom' AND atom.id = l.entity_id
    WHERE l.status = ANY(%(open)s::text[])
),
newest AS (
    SELECT DISTINCT ON (entity_type, entity_id) id, entity_type, entity_id, title, content
    FROM target
    WHERE approve
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
    SET status = CASE WHEN t.approve THEN 'approved' ELSE 'rejected' END, approved = t.approve,
        decided_by_id = %(user_id)s, decided_by_rule_id = t.rule_id, decided_by_rule_revision = t.rule_revision,
        decided_at = now(), decision_reason = t.reason,
        replaced_title = CASE WHEN t.approve THEN t.entity_title END,
        replaced_content = CASE WHEN t.approve THEN t.entity_body END
    FROM target AS t
    WHERE v.id = t.id AND v.id = ANY(%(ids)s::bigint[])
    RETURNING v.id, t.approve, t.rule_id, t.rule_revision, t.reason
){after}
SELECT (SELECT coalesce(array_agg(id ORDER BY id), '{{}}') FROM decided),
       (SELECT coalesce(jsonb_object_agg(id, status), '{{}}') FROM locked)
"""


def versions_decide_statement(
    *, decisions: list[tuple[int, bool]], open_statuses, user_id, rules=None, reason: str = "", after: str = ""
) -> tuple[list[int], dict]:
    """Run the decision statement: (decided ids, {id: status of every locked version}).

    `decisions` is (version id, approve) per version; `rules` (automation) is (rule id, revision,
    reason) per version in the same order, else every version gets `reason` and no rule."""
    rules = rules or [(None, None, reason)] * len(decisions)
    statement = _DECIDE_SQL.format(
        after=after, versions=Version._meta.db_table, topics=Topic._meta.db_table, atoms=Atom._meta.db_table
    )
    params = {
        "ids": [version_id for version_id, _ in decisions],
        "approves": [approve for _, approve in decisions],
        "rule_ids": [rule_id for rule_id, _, _ in rules],
        "rule_revisions": [revision for _, revision, _ in rules],
        "reasons": [rule_reason for _, _, rule_reason in rules],
        "open": list(open_statuses),
        "user_id": user_id,
    }
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        decided, statuses_json = cursor.fetchone()
    return list(decided), json.loads(statuses_json)  # Django has psycopg return jsonb as text


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
    decided, statuses = versions_decide_statement(
        decisions=[(version_id, approve) for version_id in ids],
        open_statuses=OPEN_FOR_STAFF,
        user_id=user.pk,
        reason=reason,
    )
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
    invalidate_pending_count_on_commit()
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
    invalidate_pending_count_on_commit()
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


def _validate_rule(data: dict) -> None:
    """Raise RuleInvalid for invalid conditions or scope (only the fields `data` holds)."""
    if "conditions" in data:
        rules.validate_conditions(data["conditions"])
    if "scope_entity_type" in data or "scope_tags" in data:
        policy.validate_scope(entity_type=data.get("scope_entity_type", ""), tags=data.get("scope_tags", []))


@transaction.atomic
def rule_create(
    *, name: str, conditions: dict, action: str, is_active: bool = False, actor, request=None, **options
) -> ApprovalRule:
    """Add a rule to the policy. `options`: priority, mode (live / evaluate), scope_entity_type,
    scope_tags. Any number of rules may be active; the first match in priority order decides."""
    _validate_rule({"conditions": conditions, **options})
    rule = ApprovalRule.objects.create(name=name, conditions=conditions, action=action, is_active=is_active, **options)
    _invalidate_policy_on_commit()
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
    _validate_rule(
        data
        if "scope_entity_type" not in data and "scope_tags" not in data
        else {
            "scope_entity_type": rule.scope_entity_type,
            "scope_tags": rule.scope_tags,
            **data,
        }
    )
    for name, value in data.items():
        setattr(rule, name, value)
    rule.revision = F("revision") + 1
    rule.save()
    rule.refresh_from_db()
    _invalidate_policy_on_commit()
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
    _invalidate_policy_on_commit()
    _record(
        action="rule.delete",
        user=actor,
        entity_type="rule",
        entity_id=rule_id,
        request=request,
    )
