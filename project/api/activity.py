"""GET /api/v1/activity/: the activity log, newest first, keyset-paginated, staff-only.

Superusers read every row. Other staff read every row but those of tenant-scoped categories
(reconciliation registers its own), of which they read only their tenants' rows: a reconciliation
act records the tenant whose data it touched (ActivityLog.tenant_id). See docs/operations.md.
"""

import json

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, permissions, serializers, viewsets
from rest_framework.exceptions import ValidationError

from project.api.pagination import TimeWindowPaginator
from project.models import ActivityLog
from project.selectors import (
    ACTIVITY_ORDERING,
    ActivityFilters,
    activity_logs,
    activity_read_windows,
    activity_visible_to,
)


class ActivityFilterSerializer(serializers.Serializer):
    """The query parameters of the reader (API and admin page alike)."""

    user = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    category = serializers.CharField(required=False, max_length=50)
    action = serializers.CharField(required=False, max_length=100)
    level = serializers.ChoiceField(required=False, choices=ActivityLog.Level.choices)
    entity_type = serializers.CharField(required=False, max_length=100)
    entity_id = serializers.CharField(required=False, max_length=100)
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
    metadata_key = serializers.CharField(required=False, max_length=100)
    # JSON when it parses (5, true, "x", [1]), else the plain string: metadata @> {key: value}.
    metadata_value = serializers.CharField(required=False, max_length=500)
    tag = serializers.CharField(required=False, max_length=100)

    def validate(self, attrs):
        if ("metadata_key" in attrs) != ("metadata_value" in attrs):
            missing = "metadata_value" if "metadata_key" in attrs else "metadata_key"
            raise ValidationError({missing: ["Give metadata_key and metadata_value together."]}, code="required")
        after, before = attrs.get("created_after"), attrs.get("created_before")
        if after and before and after >= before:
            raise ValidationError({"created_before": ["Must be later than created_after."]}, code="invalid")
        return attrs

    def to_filters(self) -> ActivityFilters:
        data = self.validated_data
        metadata = {}
        if "metadata_key" in data:
            raw = data["metadata_value"]
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
            metadata = {data["metadata_key"]: value}
        return ActivityFilters(
            user_id=data.get("user"),
            category=data.get("category"),
            action=data.get("action"),
            level=data.get("level"),
            entity_type=data.get("entity_type"),
            entity_id=data.get("entity_id"),
            created_from=data.get("created_after"),
            created_to=data.get("created_before"),
            metadata=metadata,
            tag=data.get("tag"),
        )


def activity_filters_from(params) -> ActivityFilters:
    """Validated filters from query parameters; a bad one raises a 400 naming it."""
    known = {name: params.get(name) for name in ActivityFilterSerializer().fields if params.get(name) not in (None, "")}
    serializer = ActivityFilterSerializer(data=known)
    serializer.is_valid(raise_exception=True)
    return serializer.to_filters()


class ActivityLogSerializer(serializers.ModelSerializer):
    # Null for acts without a user (beat jobs, the scheduled runs of reconciliation jobs).
    username = serializers.CharField(source="user.username", default=None, read_only=True, allow_null=True)

    class Meta:
        model = ActivityLog
        fields = [
            "id",
            "created_at",
            "user_id",
            "username",
            "category",
            "action",
            "level",
            "entity_type",
            "entity_id",
            "metadata",
            "tags",
            "ip",
        ]


@extend_schema_view(list=extend_schema(parameters=[ActivityFilterSerializer]))
class ActivityLogViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = ActivityLogSerializer
    permission_classes = [permissions.IsAdminUser]
    filter_backends: list = []  # filters are parsed and validated by ActivityFilterSerializer
    cursor_ordering = ACTIVITY_ORDERING

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular builds the schema
            return ActivityLog.objects.none()
        self.filters = activity_filters_from(self.request.query_params)
        return activity_logs(self.filters, visible=activity_visible_to(self.request.user))

    def cursor_paginator(self, queryset, ordering) -> TimeWindowPaginator:
        """Pages read one month window at a time (CursorPagination asks the view for this)."""
        return TimeWindowPaginator(queryset, ordering, activity_read_windows(self.filters))
