"""ActivityLog: every API write and admin action records who did what.

One row per act. An act on one entity names it in entity_type/entity_id; a bulk act (500 tasks
updated, a batch of versions decided) is still one act, and lists its entities in
metadata["ids"], which `activity_for_entity` matches with `metadata @> {"ids": [id]}` (an
operator the GIN index on metadata can serve).
A bulk act therefore costs one row, not hundreds, in the table that grows fastest.
"""

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q, QuerySet

from project.models import ActivityLog


def client_ip(request) -> str | None:
    if request is None:
        return None
    # Behind a proxy, gunicorn is configured to trust X-Forwarded-For only from the proxy.
    return request.META.get("REMOTE_ADDR") or None


def authenticated_user_or_none(user):
    """The user to record as the actor: None for no user or an anonymous one."""
    return user if user is not None and getattr(user, "is_authenticated", False) else None


def activity_record(
    *,
    category: str,
    action: str,
    user=None,
    entity_type: str = "",
    entity_id: Any = "",
    metadata: dict | None = None,
    tags: list | None = None,
    level: str = ActivityLog.Level.INFO,
    request=None,
    tenant_id: int | None = None,
) -> None:
    """Record one act on one entity, in the caller's transaction (it commits or rolls back with it).

    `tenant_id`: the tenant whose data was touched, for tenant-scoped categories."""
    ActivityLog.objects.create(
        user=authenticated_user_or_none(user),
        category=category,
        action=action,
        level=level,
        entity_type=entity_type,
        entity_id=str(entity_id),
        metadata=metadata or {},
        tags=tags or [],
        ip=client_ip(request),
        tenant_id=tenant_id,
    )


def activity_record_bulk(
    *,
    category: str,
    action: str,
    user=None,
    entity_type: str,
    entity_ids: list,
    metadata: dict | None = None,
    level: str = ActivityLog.Level.INFO,
    request=None,
    tenant_id: int | None = None,
) -> None:
    """Record one act on many entities as one row: metadata["ids"] lists them."""
    activity_record(
        category=category,
        action=action,
        user=user,
        entity_type=entity_type,
        metadata={**(metadata or {}), "ids": list(entity_ids), "count": len(entity_ids)},
        level=level,
        request=request,
        tenant_id=tenant_id,
    )


@dataclass(frozen=True)
class BulkAct:
    """One act on many entities, for activity_record_bulk_many."""

    action: str
    entity_type: str
    entity_ids: list
    metadata: dict = field(default_factory=dict)


def activity_record_bulk_many(*, category: str, acts: list[BulkAct], user=None, request=None) -> None:
    """Record several bulk acts in one INSERT (e.g. one per rule that decided part of a batch).

    Columns and defaults stay ActivityLog's own: callers never name them."""
    if not acts:
        return
    ActivityLog.objects.bulk_create(
        [
            ActivityLog(
                user=authenticated_user_or_none(user),
                category=category,
                action=act.action,
                level=ActivityLog.Level.INFO,
                entity_type=act.entity_type,
                entity_id="",
                metadata={**act.metadata, "ids": list(act.entity_ids), "count": len(act.entity_ids)},
                tags=[],
                ip=client_ip(request),
            )
            for act in acts
        ]
    )


def activity_for_entity(entity_type: str, entity_id: int) -> QuerySet[ActivityLog]:
    """Every act on one entity, single or bulk, newest first."""
    return ActivityLog.objects.filter(
        Q(entity_type=entity_type) & (Q(entity_id=str(entity_id)) | Q(metadata__contains={"ids": [entity_id]}))
    ).order_by("-created_at", "-id")
