"""API for bank statements and source profiles (/api/v1/reconciliations/...).

- POST /jobs/{id}/statements/?side=&statement_format= — a CAMT.053/.052, MT940, BAI2 or OFX file.
- /source-profiles/ — a tenant's CSV mappings; an upload names one: POST /jobs/{id}/records/?profile=
  (the records action, api/jobs.py).
"""

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, parsers, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.metadata import SimpleMetadata
from rest_framework.response import Response

from reconciliation import selectors
from reconciliation.api.common import TenantField, require_tenant_admin
from reconciliation.api.jobs import IngestResultSerializer
from reconciliation.api.tenancy import TenantScopedViewSet
from reconciliation.ingest.bankfiles import FORMATS, statement_ingest
from reconciliation.ingest.profiles import (
    source_profile_create,
    source_profile_delete,
    source_profile_list,
    source_profile_update,
)
from reconciliation.models import ReconciliationJob, SourceProfile, TenantMembership

Role = TenantMembership.Role


# --- Bank statements ---------------------------------------------------------------------------


class StatementFileParser(parsers.BaseParser):
    """Any non-multipart body is the statement file, read whole (statements are small)."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return stream


def _read_capped(stream, limit: int) -> bytes:
    content = stream.read(limit + 1) if hasattr(stream, "read") else b""
    if len(content) > limit:
        raise ValidationError({"file": [f"a statement is at most {limit} bytes"]}, code="too_large")
    return content


class _FileUploadMetadata(SimpleMetadata):
    """OPTIONS names the view but describes no form: the body is a file, not serializer fields."""

    def determine_actions(self, request, view):
        return {}


class StatementViewSet(TenantScopedViewSet):
    """Bank statements into a job's records (registered under /jobs/: only its actions route)."""

    queryset = ReconciliationJob.objects.none()
    metadata_class = _FileUploadMetadata
    parser_classes = [parsers.MultiPartParser, StatementFileParser]

    def scoped_queryset(self, tenant_ids):
        return selectors.job_detail(tenant_ids=tenant_ids)

    @extend_schema(
        parameters=[
            OpenApiParameter("side", str, enum=["left", "right"], description="The side the entries load into"),
            OpenApiParameter(
                "statement_format", str, enum=list(FORMATS), description="Omit to tell it from the content"
            ),
        ],
        request={
            "application/octet-stream": OpenApiTypes.BINARY,
            "application/xml": OpenApiTypes.BINARY,
            "text/plain": OpenApiTypes.BINARY,
            "multipart/form-data": OpenApiTypes.BINARY,
        },
        responses={201: IngestResultSerializer, 200: IngestResultSerializer},
        description="Load a bank statement (CAMT.053/.052, MT940, BAI2, OFX) as records: the body, or the "
        "multipart field `file`. All entries or none; re-sending the same statement changes nothing.",
    )
    @action(detail=True, methods=["post"], url_path="statements", url_name="upload")
    def statements(self, request, pk=None):
        job = self.get_object()
        statement_format = request.query_params.get("statement_format") or None
        if statement_format is not None and statement_format not in FORMATS:
            raise ValidationError({"statement_format": [f"one of {', '.join(FORMATS)}"]})
        if (request.content_type or "").startswith("multipart/form-data"):
            upload = request.FILES.get("file")
            if upload is None:
                raise ValidationError({"file": ["Attach the statement as the multipart field `file`."]})
            stream = upload
        else:
            stream = request.data
        content = _read_capped(stream, settings.RECONCILIATION_STATEMENT_MAX_BYTES)
        result = statement_ingest(
            job=job,
            content=content,
            statement_format=statement_format,
            side=request.query_params.get("side"),
            user=request.user,
        )
        code = status.HTTP_201_CREATED if result.inserted else status.HTTP_200_OK
        return Response(result.as_dict(), status=code)


# --- Source profiles ---------------------------------------------------------------------------


class SourceProfileSerializer(serializers.ModelSerializer):
    tenant = TenantField()
    columns = serializers.DictField(
        child=serializers.CharField(max_length=200),
        help_text="{record field: the file's column}: external_id, amount (or debit and credit), currency, "
        "booked_on, value_date, reference, counterparty, description, side",
    )

    class Meta:
        model = SourceProfile
        fields = [
            "id",
            "tenant",
            "name",
            "columns",
            "date_format",
            "decimal_separator",
            "thousands_separator",
            "delimiter",
            "encoding",
            "default_currency",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        # The name is unique per tenant: the service answers a duplicate with a 400 naming it.
        validators = []

    def validate_tenant(self, tenant):
        require_tenant_admin(self.context["request"].user, tenant)
        if self.instance is not None and tenant.pk != self.instance.tenant_id:
            raise ValidationError("A profile cannot move to another tenant.", code="tenant_immutable")
        return tenant


class SourceProfileViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    TenantScopedViewSet,
):
    """How a source's CSV maps onto records; admins of the tenant write them."""

    serializer_class = SourceProfileSerializer
    queryset = SourceProfile.objects.none()
    cursor_ordering = ("id",)
    role_for_action = {
        "create": Role.ADMIN,
        "update": Role.ADMIN,
        "partial_update": Role.ADMIN,
        "destroy": Role.ADMIN,
    }

    def scoped_queryset(self, tenant_ids):
        return source_profile_list(tenant_ids=tenant_ids)

    def perform_create(self, serializer):
        serializer.instance = source_profile_create(user=self.request.user, **serializer.validated_data)

    def perform_update(self, serializer):
        changes = {k: v for k, v in serializer.validated_data.items() if k != "tenant"}
        serializer.instance = source_profile_update(profile=serializer.instance, user=self.request.user, **changes)

    def perform_destroy(self, instance):
        source_profile_delete(profile=instance, user=self.request.user)
