"""Writing ActivityLog rows: every API write and admin action records who did what."""

from typing import Any

from django.db import transaction

from project.models import ActivityLog


def client_ip(request) -> str | None:
    if request is None:
        return None
    # Behind a proxy, gunicorn is configured to trust X-Forwarded-For only from the proxy.
    return request.META.get("REMOTE_ADDR") or None


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
) -> None:
    """Record one activity in the caller's transaction: it commits or rolls back with the change."""
    activity_record_many(
        category=category,
        action=action,
        user=user,
        entity_type=entity_type,
        entity_ids=[entity_id],
        metadata=metadata,
        tags=tags,
        level=level,
        request=request,
    )


@transaction.atomic
def activity_record_many(
    *,
    category: str,
    action: str,
    user=None,
    entity_type: str = "",
    entity_ids: list,
    metadata: dict | None = None,
    tags: list | None = None,
    level: str = ActivityLog.Level.INFO,
    request=None,
) -> None:
    """One row per entity, inserted with a single statement (bulk actions stay set-based)."""
    if user is not None and not getattr(user, "is_authenticated", False):
        user = None
    ip = client_ip(request)
    ActivityLog.objects.bulk_create(
        [
            ActivityLog(
                user=user,
                category=category,
                action=action,
                level=level,
                entity_type=entity_type,
                entity_id=str(entity_id),
                metadata=metadata or {},
                tags=tags or [],
                ip=ip,
            )
            for entity_id in entity_ids
        ]
    )
