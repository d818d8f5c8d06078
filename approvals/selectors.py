"""Reads in the approvals app: lists, the cached active rule and pending count, rates."""

from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from approvals.models import ApprovalRule, AutomationAuditLog, Version

ACTIVE_RULE_CACHE_KEY = "approvals:active-rule:v1"
PENDING_COUNT_CACHE_KEY = "approvals:pending-count:v1"
_NO_ACTIVE_RULE = {"none": True}  # cached too, so "no rule" does not hit the database every minute


def version_list() -> QuerySet[Version]:
    return Version.objects.select_related("author")


def rule_list() -> QuerySet[ApprovalRule]:
    return ApprovalRule.objects.all()


def active_rule_cached():
    """The active rule (5-minute cache, dropped the moment any rule changes), or None."""
    from approvals.services import ActiveRule

    def load():
        rule = ApprovalRule.objects.filter(is_active=True).first()
        if rule is None:
            return _NO_ACTIVE_RULE
        return {
            "id": rule.pk,
            "revision": rule.revision,
            "name": rule.name,
            "action": rule.action,
            "conditions": rule.conditions,
        }

    cached = cache.get_or_set(ACTIVE_RULE_CACHE_KEY, load, settings.AUTOMATION_RULE_CACHE_TTL_S)
    if cached is None or cached == _NO_ACTIVE_RULE:
        return None
    return ActiveRule(**cached)


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


def rule_preview(rule: ApprovalRule, *, limit: int) -> tuple[int, int, list[Version]]:
    """Evaluate `rule` on the oldest `limit` pending versions: (evaluated, matched, sample of 20)."""
    from approvals import rules

    oldest = list(
        Version.objects.filter(status=Version.Status.PENDING)
        .order_by("created_at", "id")
        .values_list("pk", flat=True)[:limit]
    )
    matching = rules.matching_versions(Version.objects.filter(pk__in=oldest), rule.conditions, as_of=timezone.now())
    matched = matching.count()
    sample = list(matching.select_related("author").order_by("created_at", "id")[:20])
    return len(oldest), matched, sample
