"""/api/v1/database/performance/*: the cockpit's figures as JSON, for admins (staff with
monitoring.view_dashboard). The same selectors as the pages; shapes in monitoring/api_serializers.py."""

from django.db import DatabaseError
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.permissions import BasePermission, IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from monitoring import report
from monitoring.api_serializers import (
    BacklogSerializer,
    CacheStatsSerializer,
    DatabaseStatsSerializer,
    FullReportSerializer,
    IndexUsageSerializer,
    PartitionsSerializer,
    PoolStatsSerializer,
    SlowQueriesSerializer,
    SystemMetricsSerializer,
    TableSerializer,
)
from monitoring.selectors import backlog, connections, indexes, pool, reconciliation, statements, system, tables
from monitoring.selectors.base import request_lock_timeout, unavailable

# --- views -------------------------------------------------------------------------------------


class CanViewDashboard(BasePermission):
    def has_permission(self, request, view):
        return request.user.has_perm("monitoring.view_dashboard")


class CatalogUnavailable(APIException):
    """A read cut off by its lock or statement timeout: the database is busy, not the request wrong."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "database_busy"
    default_detail = "The database did not answer in time (lock or statement timeout); try again shortly."


class PerformanceView(APIView):
    """Base of the performance endpoints: each subclass defines `data(request) -> dict`, read
    through the same selectors as the admin pages, and the serializer that documents it.

    Every read waits for locks at most MONITORING_LOCK_TIMEOUT; one that fails anyway answers
    503 in the error envelope, never 500."""

    permission_classes = [IsAdminUser, CanViewDashboard]
    serializer_class: type[serializers.Serializer]

    def get(self, request):
        return Response(self.serializer_class(self.data(request)).data)

    def handle_exception(self, exc):
        if isinstance(exc, DatabaseError):
            detail = f"{CatalogUnavailable.default_detail} ({unavailable(exc)})"
            response = super().handle_exception(CatalogUnavailable(detail))
            response["Retry-After"] = "5"
            return response
        return super().handle_exception(exc)

    def dispatch(self, request, *args, **kwargs):
        with request_lock_timeout():
            return super().dispatch(request, *args, **kwargs)


def _schema(serializer, **kwargs):
    return extend_schema(responses=serializer, tags=["database performance"], **kwargs)


@_schema(PoolStatsSerializer)
class PoolStatsView(PerformanceView):
    serializer_class = PoolStatsSerializer

    def data(self, request):
        return {"application": pool.application_pools(), "pgbouncer": pool.pgbouncer_pools()}


@_schema(DatabaseStatsSerializer)
class DatabaseStatsView(PerformanceView):
    serializer_class = DatabaseStatsSerializer

    def data(self, request):
        return {
            "database": system.database(),
            "connections": connections.connections(),
            "largest_tables": tables.tables()[:10],
            "sequences": system.sequences()[:10],
            "wraparound": system.wraparound(),
        }


@_schema(IndexUsageSerializer)
class IndexUsageView(PerformanceView):
    serializer_class = IndexUsageSerializer

    def data(self, request):
        return indexes.index_usage()


def assessment(ratio: float | None) -> str:
    # The platform report's words; "excellent" is PgHero's bar (>= 99%).
    if ratio is None:
        return "unknown"
    if ratio >= 0.99:
        return "excellent"
    if ratio >= 0.95:
        return "good"
    return "fair" if ratio >= 0.90 else "poor"


@_schema(CacheStatsSerializer)
class CacheStatsView(PerformanceView):
    serializer_class = CacheStatsSerializer

    def data(self, request):
        hit = tables.cache_hit()
        return {**hit, "performance_assessment": assessment(hit["table"])}


@_schema(TableSerializer(many=True))
class TableBloatView(PerformanceView):
    serializer_class = TableSerializer

    def get(self, request):
        return Response(TableSerializer(tables.tables(), many=True).data)


@_schema(
    SlowQueriesSerializer,
    parameters=[
        OpenApiParameter("order", str, enum=list(statements.ORDERS), description="total (default), mean or calls"),
        OpenApiParameter("window", str, enum=list(statements.WINDOWS), description="counters gained in the window"),
        OpenApiParameter("limit", int, description="1..500, default 50"),
    ],
)
class SlowQueriesView(PerformanceView):
    serializer_class = SlowQueriesSerializer

    def data(self, request):
        order = request.query_params.get("order", "total")
        window = request.query_params.get("window") or None
        errors = {}
        if order not in statements.ORDERS:
            errors["order"] = [f"one of {', '.join(statements.ORDERS)}"]
        if window is not None and window not in statements.WINDOWS:
            errors["window"] = [f"one of {', '.join(statements.WINDOWS)}"]
        try:
            limit = int(request.query_params.get("limit", 50))
            if not 1 <= limit <= 500:
                raise ValueError
        except ValueError:
            errors["limit"] = ["an integer from 1 to 500"]
            limit = 50
        if errors:
            raise ValidationError(errors)
        return statements.slow_queries(order=order, window=window, limit=limit)


@_schema(PartitionsSerializer)
class PartitionsView(PerformanceView):
    serializer_class = PartitionsSerializer

    def data(self, request):
        return {"partitioned_tables": tables.partitions(), "materialized_views": tables.materialized_views()}


@_schema(SystemMetricsSerializer)
class SystemMetricsView(PerformanceView):
    serializer_class = SystemMetricsSerializer

    def data(self, request):
        return system.node()


@_schema(BacklogSerializer)
class BacklogView(PerformanceView):
    serializer_class = BacklogSerializer

    def data(self, request):
        return {**backlog.backlog(), "reconciliation": reconciliation.reconciliation_backlog()}


@_schema(FullReportSerializer)
class FullReportView(PerformanceView):
    serializer_class = FullReportSerializer

    def data(self, request):
        return {**report.full_report(), "locks": connections.lock_waits()}
