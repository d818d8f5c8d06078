"""GET /api/v1/reconciliations/executions/{id}/export/?as=csv|ndjson: every match and exception of an
execution, streamed in one response (review/export.py), throttled in its own scope."""

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import renderers
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError

from project.api.renderers import ORJSONRenderer
from project.api.throttling import AnonRateThrottle, ScopedRateThrottle
from reconciliation import selectors
from reconciliation.api.tenancy import TenantScopedViewSet
from reconciliation.models import Execution
from reconciliation.review import export


class _StreamedRenderer(renderers.BaseRenderer):
    """Lets a client ask for the export's type in Accept; the body is streamed, never rendered."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        raise NotImplementedError("the export streams its body; errors are rendered as JSON")


class CSVRenderer(_StreamedRenderer):
    media_type, format = "text/csv", "csv"


class NDJSONRenderer(_StreamedRenderer):
    media_type, format = "application/x-ndjson", "ndjson"


class ExportThrottle(ScopedRateThrottle):
    """Counted in the `export` scope only: a pull does not spend the caller's API budget."""


class ExecutionExportViewSet(TenantScopedViewSet):
    """Results of an execution in one request (registered under /executions/)."""

    queryset = Execution.objects.none()
    throttle_scope = "export"
    throttle_classes = [AnonRateThrottle, ExportThrottle]
    renderer_classes = [ORJSONRenderer, CSVRenderer, NDJSONRenderer]

    def scoped_queryset(self, tenant_ids):
        return selectors.execution_list(tenant_ids=tenant_ids)

    def _answer_in_json(self) -> None:
        self.request.accepted_renderer, self.request.accepted_media_type = ORJSONRenderer(), "application/json"

    def handle_exception(self, exc):
        self._answer_in_json()  # a refusal is JSON, whichever file type the client accepted
        return super().handle_exception(exc)

    def options(self, request, *args, **kwargs):
        self._answer_in_json()  # the view's description, even when ?format= named a file type
        return super().options(request, *args, **kwargs)

    @extend_schema(
        parameters=[OpenApiParameter("as", str, enum=list(export.EXPORT_AS), description="csv (default) or ndjson")],
        responses={
            (200, "text/csv"): OpenApiTypes.BINARY,
            (200, "application/x-ndjson"): OpenApiTypes.BINARY,
        },
        description="Every match and exception of the execution with both sides' external ids and amounts, "
        "streamed in one response (flat memory at any size). Throttled in its own scope `export`.",
    )
    @action(detail=True, methods=["get"], url_path="export", url_name="execution")
    def export(self, request, pk=None):
        export_as = request.query_params.get("as", "csv")
        if export_as not in export.EXPORT_AS:
            raise ValidationError({"as": [f"one of {', '.join(export.EXPORT_AS)}"]})
        execution = self.get_object()
        chunks = export.execution_export(execution_id=execution.pk, tenant_id=execution.tenant_id, export_as=export_as)
        content_type = "text/csv" if export_as == "csv" else "application/x-ndjson"
        response = StreamingHttpResponse(chunks, content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="execution-{execution.pk}.{export_as}"'
        return response
