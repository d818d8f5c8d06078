"""Reads of the platform's own tables.

The activity log reader: one filtered query set, read newest first on (created_at, id) with
keyset pagination (project.api.pagination.KeysetPaginator), never OFFSET and never COUNT. User,
action, level, entity, metadata and tag each lead one index on ActivityLog (see the model);
category narrows the action index's range (or, alone, the newest-first scan; there are few
categories). A time range prunes partitions at plan time (constants in the WHERE clause), and
pages are read one month window at a time (activity_read_windows), newest first, so a read
without a time range still touches only the partitions that fill its page.

Who reads what: superusers read every row; other staff read every row except those of a
tenant-scoped category (an app registers it with register_tenant_scoped_category, e.g.
reconciliation), of which they read only their own tenants' rows (activity_visible_to).
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from project.models import ActivityLog
from project.partitions import ReadWindow, monthly_read_windows

ACTIVITY_ORDERING = ("-created_at", "-id")

# category -> the tenant ids a user may read rows of that category for.
_tenant_scoped_categories: dict[str, Callable[[Any], Iterable[int]]] = {}


def register_tenant_scoped_category(category: str, tenant_ids_of: Callable[[Any], Iterable[int]]) -> None:
    """Rows of `category` belong to the tenant in their tenant_id: staff who are not superusers read
    them only where tenant_ids_of(user) holds it (a row without one: superusers only)."""
    _tenant_scoped_categories[category] = tenant_ids_of


def activity_visible_to(user) -> Q:
    """The rows of the activity log `user` may read (nothing for anyone but active staff)."""
    if not (user and user.is_active and user.is_staff):
        return Q(id__in=[])
    if user.is_superuser:
        return Q()
    visible = ~Q(category__in=list(_tenant_scoped_categories))
    for category, tenant_ids_of in _tenant_scoped_categories.items():
        visible |= Q(category=category, tenant_id__in=tenant_ids_of(user))
    return visible


@dataclass(frozen=True)
class ActivityFilters:
    """What an operator can narrow the log by; every field is optional."""

    user_id: int | None = None
    category: str | None = None
    action: str | None = None
    level: str | None = None
    entity_type: str | None = None
    entity_id: str | None = None
    created_from: datetime | None = None  # inclusive
    created_to: datetime | None = None  # exclusive
    metadata: dict[str, Any] = field(default_factory=dict)  # containment: metadata @> this
    tag: str | None = None


def activity_read_windows(filters: ActivityFilters = ActivityFilters()) -> list[ReadWindow]:
    """The time windows a page of `activity_logs(filters)` is read in, newest first (see
    project.api.pagination.TimeWindowPaginator): month bounds prune partitions even when the
    operator gave no time range, and a page stops at the first windows that fill it."""
    return monthly_read_windows(
        timezone.now(),
        months_back=settings.PARTITION_MONTHS_BACK,
        since=filters.created_from,
        until=filters.created_to,
    )


def activity_logs(filters: ActivityFilters = ActivityFilters(), *, visible: Q | None = None) -> QuerySet[ActivityLog]:
    """The activity log narrowed by `filters` (and to `visible`, from activity_visible_to), newest
    first; page it with TimeWindowPaginator."""
    queryset = ActivityLog.objects.filter(visible) if visible is not None else ActivityLog.objects.all()
    if filters.user_id is not None:
        queryset = queryset.filter(user_id=filters.user_id)  # activity_user_created_idx
    if filters.action:
        queryset = queryset.filter(action=filters.action)  # activity_action_created_idx
    if filters.category:
        queryset = queryset.filter(category=filters.category)
    if filters.level:
        queryset = queryset.filter(level=filters.level)  # activity_level_created_idx
    if filters.entity_type:
        queryset = queryset.filter(entity_type=filters.entity_type)  # activity_entity_idx
    if filters.entity_id:
        queryset = queryset.filter(entity_id=filters.entity_id)
    if filters.created_from is not None:
        queryset = queryset.filter(created_at__gte=filters.created_from)  # partition pruning
    if filters.created_to is not None:
        queryset = queryset.filter(created_at__lt=filters.created_to)
    if filters.metadata:
        queryset = queryset.filter(metadata__contains=filters.metadata)  # activity_metadata_path_gin
    if filters.tag:
        queryset = queryset.filter(tags__contains=[filters.tag])  # activity_tags_gin
    return queryset.select_related("user").order_by(*ACTIVITY_ORDERING)
