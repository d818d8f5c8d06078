"""Reads in the approvals app: lists, the cached active policy and pending count, rates."""

from dataclasses import replace
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from approvals.models import ApprovalRule, AutomationAuditLog, RuleEvaluation, Version
from approvals.policy import Policy, PolicyRule, rule_q

POLICY_CACHE_KEY = "approvals:policy:v2"
PENDING_COUNT_CACHE_KEY = "approvals:pending-count:v1"


def version_list() -> QuerySet[Version]:
    return Version.objects.select_related("author")


# What the API renders of a version (api.VersionSerializer's fields), and the columns that hold
# it: the users and the rule are rendered as their ids (author -> author_id).
VERSION_API_FIELDS = (
    "id",
    "entity_type",
    "entity_id",
    "title",
    "content",
    "tags",
    "author",
    "status",
    "decided_by",
    "decided_by_rule",
    "decision_reason",
    "decided_at",
    "reverted_by",
    "reverted_at",
    "created_at",
)
VERSION_ROW_FIELDS = tuple(Version._meta.get_field(name).attname for name in VERSION_API_FIELDS)


def version_rows() -> QuerySet:
    """Versions as dicts of VERSION_ROW_FIELDS, for the API's list: no model instance per row and
    no join of the author (the API renders its id only); a 50-row page cost 11.2 ms in process with
    instances and DRF's fields (bench/results/profile-*.txt)."""
    return Version.objects.values(*VERSION_ROW_FIELDS)


def rule_list() -> QuerySet[ApprovalRule]:
    return ApprovalRule.objects.all()


def active_policy() -> Policy:
    """Every active rule, live ones in the order they are tried, and those in evaluate mode."""
    return Policy.of(PolicyRule.of(rule) for rule in ApprovalRule.objects.filter(is_active=True))


def active_policy_cached() -> Policy:
    """The active policy (5-minute cache, dropped the moment any rule changes)."""

    def load() -> list[dict]:
        # Plain data in the cache (an empty list: no active rule, cached too).
        policy = active_policy()
        return [rule.as_dict() for rule in policy.live + policy.evaluating]

    cached = cache.get_or_set(POLICY_CACHE_KEY, load, settings.AUTOMATION_RULE_CACHE_TTL_S) or []
    return Policy.of(PolicyRule(**{**rule, "scope_tags": tuple(rule["scope_tags"])}) for rule in cached)


def pending_count() -> int:
    # An index-only count over the partial index on pending versions.
    return Version.objects.filter(status=Version.Status.PENDING).count()


def pending_count_cached() -> int:
    """The badge's number: cached for PENDING_COUNT_CACHE_TTL_S, dropped on every decision."""
    return cache.get_or_set(PENDING_COUNT_CACHE_KEY, pending_count, settings.PENDING_COUNT_CACHE_TTL_S)


def pending_backlog() -> dict:
    """The pending queue for monitoring: count (cached like the badge) and the age in seconds of
    the oldest pending version and of the p50 and p95 ones (None when nothing is pending).

    Percentiles are read at an offset into the partial index on pending versions (created_at, id):
    index-only, no sort, and no COUNT beyond the one the badge caches.
    """
    count = pending_count_cached()
    if not count:
        return {"count": 0, "oldest_age_s": None, "p50_age_s": None, "p95_age_s": None}
    now = timezone.now()
    pending = Version.objects.filter(status=Version.Status.PENDING).order_by("created_at", "id")

    def age_at(offset: int) -> float | None:
        created = list(pending.values_list("created_at", flat=True)[offset : offset + 1])
        return (now - created[0]).total_seconds() if created else None

    # The p95 age is the age 5% of the way in from the oldest.
    return {
        "count": count,
        "oldest_age_s": age_at(0),
        "p50_age_s": age_at(min(count - 1, count // 2)),
        "p95_age_s": age_at(min(count - 1, int(count * 0.05))),
    }


def false_positive_rate(*, window_hours: int | None = None) -> float | None:
    """Share of automated decisions in the window that a person reverted (None: no decisions).

    Read from the audit log (one row per automated decision, time-indexed and partitioned),
    joined to each version's current status.
    """
    if window_hours is None:
        window_hours = settings.FALSE_POSITIVE_WINDOW_HOURS
    since = timezone.now() - timedelta(hours=window_hours)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT count(*), count(*) FILTER (WHERE v.status = %s)
            FROM {AutomationAuditLog._meta.db_table} AS a
            JOIN {Version._meta.db_table} AS v ON v.id = a.version_id
            WHERE a.created_at >= %s
            """,
            [Version.Status.REVERTED, since],
        )
        automated, reverted = cursor.fetchone()
    return reverted / automated if automated else None


def policy_with(rule: ApprovalRule) -> list[PolicyRule]:
    """The live rules of the active policy with `rule` taken as live too, in the order tried:
    what the policy would be if `rule` were enabled."""
    candidate = replace(PolicyRule.of(rule), mode=ApprovalRule.Mode.LIVE)
    others = [other for other in active_policy().live if other.id != rule.pk]
    return list(Policy.of([*others, candidate]).live)


def rule_preview(rule: ApprovalRule, *, limit: int) -> tuple[int, int, list[Version]]:
    """Evaluate `rule` (scope and conditions) on the oldest `limit` pending versions:
    (evaluated, matched, sample of 20)."""
    oldest = list(
        Version.objects.filter(status=Version.Status.PENDING)
        .order_by("created_at", "id")
        .values_list("pk", flat=True)[:limit]
    )
    matching = Version.objects.filter(pk__in=oldest).filter(rule_q(PolicyRule.of(rule), as_of=timezone.now()))
    matched = matching.count()
    sample = list(matching.select_related("author").order_by("created_at", "id")[:20])
    return len(oldest), matched, sample


def evaluation_agreement(rule_id: int, *, revision: int | None = None) -> dict:
    """How a rule in evaluate mode compares with staff: among the versions it would have decided
    (approve or reject) that a person has decided since, how many it agrees with. One query."""
    evaluations = RuleEvaluation.objects.filter(rule_id=rule_id).exclude(would_decide="left")
    if revision is not None:
        evaluations = evaluations.filter(rule_revision=revision)
    decided_by_staff = Version.objects.filter(
        pk=OuterRef("version_id"), decided_by__isnull=False, status__in=["approved", "rejected", "reverted"]
    )
    staff_status = Subquery(decided_by_staff.values("status")[:1])
    counts = evaluations.annotate(staff=staff_status).aggregate(
        recorded=Count("pk"),
        compared=Count("pk", filter=Q(staff__isnull=False)),
        agreements=Count("pk", filter=Q(staff=F("would_decide"))),
    )
    compared = counts["compared"]
    counts["disagreement_rate"] = (compared - counts["agreements"]) / compared if compared else None
    return counts
