"""Writing ActivityLog rows: every API write and admin action records who did what."""

import json
from typing import Any

from django.db import connection

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


# One INSERT for any number of entities: rows are made in PostgreSQL from an array of ids, not
# built as model instances in Python (500 of those cost more than the insert itself).
_INSERT_MANY_SQL = f"""
INSERT INTO {ActivityLog._meta.db_table}
    (user_id, category, action, level, entity_type, entity_id, metadata, tags, ip, created_at)
SELECT %s, %s, %s, %s, %s, entity_id, %s::jsonb, %s::jsonb, %s::inet, now()
FROM unnest(%s::text[]) AS entity_id
"""


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
    user_id = user.pk if user is not None and getattr(user, "is_authenticated", False) else None
    with connection.cursor() as cursor:
        cursor.execute(
            _INSERT_MANY_SQL,
            [
                user_id,
                category,
                action,
                level,
                entity_type,
                json.dumps(metadata or {}),
                json.dumps(tags or []),
                client_ip(request),
                [str(entity_id) for entity_id in entity_ids],
            ],
        )
