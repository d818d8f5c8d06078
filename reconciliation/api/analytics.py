"""Read-only endpoints over the analytics views, registered in reconciliation/api/urls.py:

    router.register("analytics", AnalyticsViewSet, basename="recon-analytics")

gives, under /api/v1/reconciliations/analytics/:
    daily-summary/   ?tenant=<id>&job=<id>&since=<YYYY-MM-DD>
    job-performance/ ?tenant=<id>
    usage-hourly/    ?tenant=<id>&since=<ISO datetime, default 24 h ago>
    match-accuracy/  ?tenant=<id>

Scoping goes through TenantScopedViewSet like every reconciliation endpoint: the user's tenants
(any role), narrowed by ?tenant; a tenant or job the user does not belong to is a 404. Every
response carries when its view was last refreshed (docs/reconciliation-analytics.md).
"""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from reconciliation.analytics import matviews as analytics
from reconciliation.api import analytics_serializers as out
from reconciliation.api.tenancy import TenantScopedViewSet
from reconciliation.models import ReconciliationJob


class _TenantQuerySerializer(serializers.Serializer):
    tenant = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)


_TENANT_PARAMETER = OpenApiParameter("tenant", int, description="Only this tenant (default: all of yours)")


class AnalyticsViewSet(TenantScopedViewSet):
    queryset = ReconciliationJob.objects.none()  # no model of its own; the schema needs one
    pagination_class = None
    # Every action is a GET: TenantScopedViewSet lets any member role read.

    def scoped_queryset(self, tenant_ids):
        return ReconciliationJob.objects.filter(tenant_id__in=tenant_ids)

    def scoped_tenant_ids(self) -> list[int]:
        """The user's tenants, or the one asked for with ?tenant (404 if not the user's)."""
        query = _TenantQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        tenant_ids = self.tenant_ids()
        tenant = query.validated_data.get("tenant")
        if tenant is None:
            return tenant_ids
        if tenant not in tenant_ids:
            raise NotFound()
        return [tenant]

    @extend_schema(
        parameters=[_TENANT_PARAMETER, out.DailySummaryQuerySerializer], responses=out.DailySummarySerializer
    )
    @action(detail=False, methods=["get"], url_path="daily-summary")
    def daily_summary(self, request):
        tenant_ids = self.scoped_tenant_ids()
        query = out.DailySummaryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        job_id = query.validated_data.get("job")
        if job_id is not None and not ReconciliationJob.objects.filter(pk=job_id, tenant_id__in=tenant_ids).exists():
            raise NotFound()
        result = analytics.daily_summary(tenant_ids=tenant_ids, job_id=job_id, since=query.validated_data.get("since"))
        return Response(out.DailySummarySerializer(result).data)

    @extend_schema(parameters=[_TENANT_PARAMETER], responses=out.JobPerformanceSerializer)
    @action(detail=False, methods=["get"], url_path="job-performance")
    def job_performance(self, request):
        result = analytics.job_performance(tenant_ids=self.scoped_tenant_ids())
        return Response(out.JobPerformanceSerializer(result).data)

    @extend_schema(
        parameters=[_TENANT_PARAMETER, out.TenantUsageQuerySerializer], responses=out.TenantUsageHourlySerializer
    )
    @action(detail=False, methods=["get"], url_path="usage-hourly")
    def usage_hourly(self, request):
        tenant_ids = self.scoped_tenant_ids()
        query = out.TenantUsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        result = analytics.tenant_usage_hourly(tenant_ids=tenant_ids, since=query.validated_data["since"])
        return Response(out.TenantUsageHourlySerializer(result).data)

    @extend_schema(parameters=[_TENANT_PARAMETER], responses=out.MatchAccuracySerializer)
    @action(detail=False, methods=["get"], url_path="match-accuracy")
    def match_accuracy(self, request):
        result = analytics.match_accuracy(tenant_ids=self.scoped_tenant_ids())
        return Response(out.MatchAccuracySerializer(result).data)
