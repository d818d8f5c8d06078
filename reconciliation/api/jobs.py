"""Tenants, jobs (their rules and records), executions, and the guide's execution summary.

Every viewset derives from TenantScopedViewSet (api/tenancy.py): rows of tenants the user does not
belong to do not exist for it (404), and each action needs a role in the object's tenant.
"""

import django_filters
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from psycopg import sql
from rest_framework import mixins, parsers, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from project.api.filters import IdFilter
from project.api.renderers import ORJSONParser
from reconciliation import selectors
from reconciliation.api.common import Role, TenantField, domain_errors_to_http, require_tenant_admin
from reconciliation.api.tenancy import TenantRolePermission, TenantScopedViewSet, roles_of
from reconciliation.engine import services
from reconciliation.ingest.records import records_ingest
from reconciliation.models import (
    Execution,
    ReconciliationJob,
    Record,
    Tenant,
)


class TenantSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()

    class Meta:
        model = Tenant
        fields = ["id", "name", "slug", "role", "created_at"]

    def get_role(self, tenant) -> str:
        return roles_of(self.context["request"].user).get(tenant.pk)


class JobListSerializer(serializers.ModelSerializer):
    class Meta:
        model = ReconciliationJob
        fields = ["id", "tenant", "name", "is_active", "created_at", "updated_at"]


class JobSerializer(serializers.ModelSerializer):
    tenant = TenantField()

    class Meta:
        model = ReconciliationJob
        fields = ["id", "tenant", "name", "rules", "is_active", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate_tenant(self, tenant):
        require_tenant_admin(self.context["request"].user, tenant)
        if self.instance is not None and tenant.pk != self.instance.tenant_id:
            raise ValidationError("A job cannot move to another tenant.", code="tenant_immutable")
        return tenant


class RecordSerializer(serializers.ModelSerializer):
    # Annotated by selectors.record_list (a LEFT JOIN to MatchedRecord).
    match_id = serializers.IntegerField(allow_null=True, read_only=True)
    status = serializers.ChoiceField(choices=Record.Status.choices, read_only=True)

    class Meta:
        model = Record
        fields = [
            "id",
            "job",
            "side",
            "external_id",
            "amount",
            "currency",
            "booked_on",
            "reference",
            "reference_norm",
            "counterparty",
            "description",
            "status",
            "match_id",
            "created_at",
        ]


class IngestResultSerializer(serializers.Serializer):
    received = serializers.IntegerField()
    inserted = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    rejected = serializers.IntegerField()
    errors = serializers.ListField(child=serializers.DictField())


class ExecutionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Execution
        fields = [
            "id",
            "job",
            "status",
            "dry_run",
            "created_at",
            "started_at",
            "finished_at",
            "heartbeat_at",
            "attempts",
            "passes_done",
            "summary",
            "error",
        ]


class RunSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField(default=False)


class RecordFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Record.Status.choices, method="filter_status")

    class Meta:
        model = Record
        fields = ["side"]

    def filter_status(self, queryset, name, value):
        return queryset.filter(matched__isnull=value == Record.Status.OPEN)


# Filters by id are IdFilters, never ModelChoiceFilters: those answer 400 for an id that does not
# exist and 200-empty for another tenant's, which tells a client what exists elsewhere.
class JobFilter(django_filters.FilterSet):
    tenant = IdFilter(field_name="tenant_id")

    class Meta:
        model = ReconciliationJob
        fields = ["is_active"]


class ExecutionFilter(django_filters.FilterSet):
    job = IdFilter(field_name="job_id")

    class Meta:
        model = Execution
        fields = ["status"]


class CSVStreamParser(parsers.BaseParser):
    """text/csv bodies are not read here: the ingest streams them into COPY."""

    media_type = "text/csv"

    def parse(self, stream, media_type=None, parser_context=None):
        return stream


class TenantViewSet(mixins.ListModelMixin, TenantScopedViewSet):
    """The tenants you belong to, with your role in each."""

    serializer_class = TenantSerializer
    queryset = Tenant.objects.none()
    cursor_ordering = ("id",)

    def scoped_queryset(self, tenant_ids):
        return selectors.tenant_list(tenant_ids=tenant_ids)


class JobViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    TenantScopedViewSet,
):
    queryset = ReconciliationJob.objects.none()
    cursor_ordering = ("-created_at", "-id")
    filterset_class = JobFilter
    role_for_action = {
        "create": Role.ADMIN,
        "update": Role.ADMIN,
        "partial_update": Role.ADMIN,
        "records": Role.OPERATOR,
        "run": Role.OPERATOR,
    }
    # The project's bounded JSON parser (settings), plus CSV streamed into COPY and multipart files.
    parser_classes = [ORJSONParser, CSVStreamParser, parsers.MultiPartParser]

    def scoped_queryset(self, tenant_ids):
        if self.action == "list":
            return selectors.job_list(tenant_ids=tenant_ids)
        return selectors.job_detail(tenant_ids=tenant_ids)

    def get_serializer_class(self):
        return JobListSerializer if self.action == "list" else JobSerializer

    def list(self, request, *args, **kwargs):
        """Jobs of your tenants, newest first; cached RECONCILIATION_JOB_LIST_CACHE_S (5 min), dropped
        whenever a job of one of them changes."""
        tenant_ids = self.tenant_ids()
        key = "recon:joblist:{}:{}:{}".format(
            ",".join(map(str, tenant_ids)), selectors.job_list_cache_version(tenant_ids), request.GET.urlencode()
        )
        data = cache.get(key)
        if data is None:
            data = super().list(request, *args, **kwargs).data
            cache.set(key, data, timeout=settings.RECONCILIATION_JOB_LIST_CACHE_S)
        return Response(data)

    @domain_errors_to_http
    def perform_create(self, serializer):
        serializer.instance = services.job_create(user=self.request.user, **serializer.validated_data)

    @domain_errors_to_http
    def create(self, request, *args, **kwargs):
        return super().create(request, *args, **kwargs)

    @domain_errors_to_http
    def update(self, request, *args, **kwargs):
        return super().update(request, *args, **kwargs)

    def perform_update(self, serializer):
        changes = {k: v for k, v in serializer.validated_data.items() if k != "tenant"}
        serializer.instance = services.job_update(job=serializer.instance, user=self.request.user, **changes)

    @extend_schema(
        methods=["POST"],
        parameters=[
            OpenApiParameter("side", str, enum=["left", "right"], description="Side of rows with no side"),
            OpenApiParameter("on_error", str, enum=["reject", "skip"], description="reject (default): all or nothing"),
        ],
        request={
            "text/csv": OpenApiTypes.BINARY,
            "multipart/form-data": OpenApiTypes.BINARY,
            "application/json": OpenApiTypes.ANY,
        },
        responses={201: IngestResultSerializer, 200: IngestResultSerializer},
        description="Load records: a CSV (text/csv body or multipart field `file`, any size) or a JSON array "
        "(at most 10,000). Re-uploading the same records changes nothing.",
    )
    @extend_schema(methods=["GET"], responses=RecordSerializer(many=True))
    @action(detail=True, methods=["get", "post"])
    @domain_errors_to_http
    def records(self, request, pk=None):
        job = self.get_object()
        if request.method == "GET":
            return self._record_page(request, job)
        content_type = (request.content_type or "").split(";")[0].strip()
        kwargs = {
            "job": job,
            "side": request.query_params.get("side"),
            "on_error": request.query_params.get("on_error", "reject"),
            "user": request.user,
        }
        if content_type == "text/csv":
            result = records_ingest(csv_stream=request.data, **kwargs)
        elif content_type == "multipart/form-data":
            upload = request.FILES.get("file")
            if upload is None:
                raise ValidationError({"file": ["Attach the CSV as the multipart field `file`."]})
            result = records_ingest(csv_stream=upload, **kwargs)
        else:
            result = records_ingest(json_rows=request.data, **kwargs)
        code = status.HTTP_201_CREATED if result.inserted else status.HTTP_200_OK
        return Response(result.as_dict(), status=code)

    def _record_page(self, request, job):
        queryset = RecordFilter(
            request.query_params, queryset=selectors.record_list(tenant_ids=[job.tenant_id]).filter(job=job)
        ).qs
        self.cursor_ordering = ("side", "external_id")  # the unique (job, side, external_id) index
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(RecordSerializer(page, many=True).data)

    @extend_schema(request=RunSerializer, responses={202: ExecutionSerializer})
    @action(detail=True, methods=["post"])
    @domain_errors_to_http
    def run(self, request, pk=None):
        """Queue an execution (202); poll /executions/{id}/ or the summary for its progress."""
        params = RunSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        execution = services.execution_start(job=self.get_object(), user=request.user, **params.validated_data)
        return Response(ExecutionSerializer(execution).data, status=status.HTTP_202_ACCEPTED)


class ExecutionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    serializer_class = ExecutionSerializer
    queryset = Execution.objects.none()
    cursor_ordering = ("-id",)
    filterset_class = ExecutionFilter

    def scoped_queryset(self, tenant_ids):
        return selectors.execution_list(tenant_ids=tenant_ids)

    @extend_schema(request=None, responses=ExecutionSerializer)
    @action(detail=True, methods=["post"])
    @domain_errors_to_http
    def cancel(self, request, pk=None):
        execution = services.execution_cancel(execution=self.get_object(), user=request.user)
        return Response(ExecutionSerializer(execution).data)

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def report(self, request, pk=None):
        """Every match and every exception of the execution as CSV, streamed by PostgreSQL's COPY."""
        execution = self.get_object()
        response = StreamingHttpResponse(_report_csv(execution.pk), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="execution-{execution.pk}.csv"'
        return response


REPORT_QUERY = """
    COPY (
        SELECT 'match' AS kind, m.id, m.pass_name AS detail, m.status, m.confidence,
               array_to_string(m.left_ids, ';') AS left_ids, array_to_string(m.right_ids, ';') AS right_ids,
               m.left_amount AS amount, m.matched_at AS at
        FROM reconciliation_match m WHERE m.execution_id = {execution_id}
        UNION ALL
        SELECT 'exception', u.id, u.reason, CASE WHEN u.resolved_at IS NULL THEN 'open' ELSE 'resolved' END, NULL,
               CASE WHEN u.side = 'left' THEN u.record_id::text END,
               CASE WHEN u.side = 'right' THEN u.record_id::text END, u.amount, u.created_at
        FROM reconciliation_unmatched u WHERE u.execution_id = {execution_id}
        ORDER BY 1 DESC, 2
    ) TO STDOUT WITH (FORMAT csv, HEADER true)
"""


def _report_csv(execution_id: int):
    # Its own cursor on the request's connection, read block by block: memory stays flat.
    with connection.cursor() as django_cursor:
        query = sql.SQL(REPORT_QUERY).format(execution_id=sql.Literal(execution_id))
        with django_cursor.cursor.copy(query) as copy:
            yield from copy


class ExecutionSummaryView(APIView):
    """GET /api/v1/reconciliations/{id}/summary — the guide's path; cached 60 s, with an ETag."""

    permission_classes = [TenantRolePermission]

    @extend_schema(
        responses=inline_serializer(
            "ExecutionSummary",
            {
                "execution_id": serializers.IntegerField(),
                "job_id": serializers.IntegerField(),
                "status": serializers.CharField(),
                "dry_run": serializers.BooleanField(),
                "created_at": serializers.DateTimeField(),
                "started_at": serializers.DateTimeField(allow_null=True),
                "finished_at": serializers.DateTimeField(allow_null=True),
                "passes_done": serializers.ListField(child=serializers.CharField()),
                "summary": serializers.DictField(),
            },
        )
    )
    def get(self, request, pk: int):
        body = selectors.execution_summary(execution_id=pk)
        if body is None or body["tenant_id"] not in roles_of(request.user):
            raise NotFound()
        return Response({key: value for key, value in body.items() if key != "tenant_id"})
