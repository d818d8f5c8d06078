"""Tasks API: /api/v1/projects/ and /api/v1/tasks/ (with batch, bulk-update and stats)."""

import django_filters
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from project.api.filters import IdFilter, IsoDateTimeFilter
from project.api.pagination import DEFAULT_ORDERING
from project.api.representation import as_row, datetime_renderer
from tasks import selectors, services
from tasks.models import Project, Task

User = get_user_model()


# --- Serializers --------------------------------------------------------------------------------


class UserRefSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "username"]


class ProjectSerializer(serializers.ModelSerializer):
    owner = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = Project
        fields = ["id", "name", "owner", "created_at"]
        read_only_fields = ["id", "owner", "created_at"]


class TaskSerializer(serializers.ModelSerializer):
    """Output and input for one task. Relations are ids, so a page needs no query per row."""

    project = serializers.PrimaryKeyRelatedField(queryset=Project.objects.all())
    assignee = serializers.PrimaryKeyRelatedField(
        queryset=User.objects.filter(is_active=True), allow_null=True, required=False
    )
    tags = serializers.ListField(child=serializers.CharField(max_length=50), max_length=20, required=False)

    class Meta:
        model = Task
        fields = list(selectors.TASK_API_FIELDS)
        read_only_fields = ["id", "created_at", "updated_at", "completed_at"]

    def to_representation(self, instance: Task | dict) -> dict:
        # What DRF's per-field machinery renders, written out: it was most of a 50-row page's CPU
        # (bench/results/profile-*.txt). tests/tasks/test_serializers.py holds it equal to DRF's.
        # The API's reads pass rows (selectors.task_rows), its writes model instances.
        return task_row_representation(as_row(instance, selectors.TASK_ROW_FIELDS), timezone.get_current_timezone())


def task_row_representation(row: dict, zone) -> dict:
    datetime_text = datetime_renderer(zone)
    return {
        "id": row["id"],
        "project": row["project_id"],
        "title": str(row["title"]),
        "description": str(row["description"]),
        "assignee": row["assignee_id"],
        "status": str(row["status"]),
        "priority": str(row["priority"]),
        "deadline": datetime_text(row["deadline"], zone),
        "tags": [str(tag) for tag in row["tags"]],
        "created_at": datetime_text(row["created_at"], zone),
        "updated_at": datetime_text(row["updated_at"], zone),
        "completed_at": datetime_text(row["completed_at"], zone),
    }


class TaskIdsSerializer(serializers.Serializer):
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=2**63 - 1),
        min_length=1,
        max_length=selectors.BATCH_MAX_IDS,
    )


class TaskBulkUpdateSerializer(TaskIdsSerializer):
    status = serializers.ChoiceField(choices=Task.Status.choices, required=False)
    assignee = serializers.PrimaryKeyRelatedField(
        queryset=User.objects.filter(is_active=True), allow_null=True, required=False
    )

    def validate(self, attrs):
        if "status" not in attrs and "assignee" not in attrs:
            raise ValidationError({"non_field_errors": ["Give status, assignee or both."]}, code="nothing_to_change")
        return attrs


# --- Filters ------------------------------------------------------------------------------------


class TaskFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=Task.Status.choices)
    priority = django_filters.MultipleChoiceFilter(choices=Task.Priority.choices)
    assignee = IdFilter(field_name="assignee_id")
    project = IdFilter(field_name="project_id")
    tag = django_filters.CharFilter(method="filter_tag", max_length=50)
    deadline_after = IsoDateTimeFilter(field_name="deadline", lookup_expr="gte")
    deadline_before = IsoDateTimeFilter(field_name="deadline", lookup_expr="lt")
    created_after = IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    overdue = django_filters.BooleanFilter(method="filter_overdue")
    search = django_filters.CharFilter(method="filter_search", max_length=200)

    class Meta:
        model = Task
        fields = []

    def filter_tag(self, queryset, name, value):
        return queryset.filter(tags__contains=[value])  # served by the jsonb_path_ops GIN index

    def filter_overdue(self, queryset, name, value):
        return selectors.tasks_overdue(queryset, value)

    def filter_search(self, queryset, name, value):
        return selectors.task_search(queryset, value)


# --- Views --------------------------------------------------------------------------------------


class ProjectViewSet(viewsets.ModelViewSet):
    serializer_class = ProjectSerializer

    def get_queryset(self):
        return selectors.project_list()

    def perform_create(self, serializer):
        serializer.instance = services.project_create(
            name=serializer.validated_data["name"],
            owner=self.request.user,
            actor=self.request.user,
            request=self.request,
        )

    def perform_update(self, serializer):
        serializer.instance = services.project_update(
            project=serializer.instance,
            data=serializer.validated_data,
            actor=self.request.user,
            request=self.request,
        )

    def perform_destroy(self, instance):
        services.project_delete(project=instance, actor=self.request.user, request=self.request)


class TaskViewSet(viewsets.ModelViewSet):
    serializer_class = TaskSerializer
    filterset_class = TaskFilter
    # `batch` and `stats` are reads (POST only to carry many ids): they need view_task.
    read_only_actions = ("batch", "stats")
    throttle_scope = None  # bulk-update sets the "bulk" scope (REST_FRAMEWORK throttle rates)

    @property
    def cursor_ordering(self):
        # Ranked search pages by relevance, then id: still a unique ordering for the cursor.
        if self.action == "list" and self.request.query_params.get("search", "").strip():
            return ("-search_rank", "-id")
        return DEFAULT_ORDERING

    def get_queryset(self):
        # Reads render rows, never model instances; writes need the instances (services).
        if self.action in ("list", "retrieve"):
            return selectors.task_rows()
        return selectors.task_list()

    def list(self, request, *args, **kwargs):
        if self.request.query_params.get("search", "").strip():
            with selectors.task_search_plan():
                return super().list(request, *args, **kwargs)
        return super().list(request, *args, **kwargs)

    def perform_create(self, serializer):
        serializer.instance = services.task_create(
            actor=self.request.user, request=self.request, **serializer.validated_data
        )

    def perform_update(self, serializer):
        serializer.instance = services.task_update(
            task=serializer.instance,
            data=serializer.validated_data,
            actor=self.request.user,
            request=self.request,
        )

    def perform_destroy(self, instance):
        services.task_delete(task=instance, actor=self.request.user, request=self.request)

    @extend_schema(
        request=TaskIdsSerializer,
        responses=inline_serializer(
            "TaskBatch",
            {"results": TaskSerializer(many=True), "missing": serializers.ListField(child=serializers.IntegerField())},
        ),
    )
    @action(detail=False, methods=["post"])
    def batch(self, request):
        """Up to 500 tasks by id in one query, in the order asked; unknown ids come back in `missing`."""
        params = TaskIdsSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        tasks, missing = selectors.tasks_by_ids(params.validated_data["ids"])
        return Response({"results": TaskSerializer(tasks, many=True).data, "missing": missing})

    @extend_schema(
        request=TaskBulkUpdateSerializer,
        responses=inline_serializer("TaskBulkUpdateResult", {"updated": serializers.IntegerField()}),
    )
    @action(detail=False, methods=["post"], url_path="bulk-update", throttle_scope="bulk")
    def bulk_update(self, request):
        """Change status and/or assignee of up to 500 tasks in one transaction: all or nothing."""
        params = TaskBulkUpdateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        changes = {key: data[key] for key in ("status", "assignee") if key in data}
        # A missing id raises TasksNotFound: a 400 naming the ids (project/errors.py).
        updated = services.task_bulk_update(task_ids=data["ids"], changes=changes, actor=request.user, request=request)
        return Response({"updated": updated}, status=status.HTTP_200_OK)

    @extend_schema(
        parameters=[OpenApiParameter("assignee", int, required=True, description="user id")],
        responses=inline_serializer(
            "TaskStats",
            {
                "assignee": serializers.IntegerField(),
                "total": serializers.IntegerField(),
                "overdue": serializers.IntegerField(),
                "by_status": serializers.DictField(child=serializers.IntegerField()),
                "by_priority": serializers.DictField(child=serializers.IntegerField()),
            },
        ),
    )
    @action(detail=False, methods=["get"])
    def stats(self, request):
        """Counts by status and priority and the overdue count for one assignee (cached 5 min)."""
        raw = request.query_params.get("assignee", "")
        # isascii: "²".isdigit() is True, yet int("²") is a ValueError.
        if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) < 2**63:
            raise ValidationError({"assignee": ["Give the assignee's user id, a positive integer."]}, code="invalid")
        stats = selectors.task_stats_cached(assignee_id=int(raw), ttl_s=settings.TASK_STATS_CACHE_TTL_S)
        return Response(stats)
