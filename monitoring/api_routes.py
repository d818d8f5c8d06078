"""/api/v1/database/performance/request-latency: request p95 by route over the last hour, from
the minute samples the System page reads (the per-view latency histogram of every web process)."""

from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

from monitoring import history
from monitoring.api import PerformanceView, _schema

MAX_HOURS = 24 * 14


class RouteLatencySerializer(serializers.Serializer):
    route = serializers.CharField(help_text="the Django view, as django-prometheus labels it")
    requests = serializers.IntegerField(help_text="requests in the window")
    p95_ms = serializers.FloatField(allow_null=True, help_text="p95 of the latest sampled minute")
    worst_p95_ms = serializers.FloatField(allow_null=True, help_text="the worst minute's p95 in the window")
    last_seen = serializers.DateTimeField()


class RequestLatencySerializer(serializers.Serializer):
    hours = serializers.IntegerField()
    routes = RouteLatencySerializer(many=True)


class HoursParameter(serializers.Serializer):
    hours = serializers.IntegerField(min_value=1, max_value=MAX_HOURS, default=1)


@_schema(
    RequestLatencySerializer,
    parameters=[OpenApiParameter("hours", int, description=f"window, 1 to {MAX_HOURS} hours (default 1)")],
)
class RequestLatencyView(PerformanceView):
    serializer_class = RequestLatencySerializer

    def data(self, request):
        params = HoursParameter(data=request.query_params)
        params.is_valid(raise_exception=True)
        hours = params.validated_data["hours"]
        return {"hours": hours, "routes": history.route_latency(hours=hours)}
