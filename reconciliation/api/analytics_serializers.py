"""Input and output serializers of the analytics endpoints (the selectors are reconciliation.analytics).

Every output has the same envelope: {view, refreshed_at, refresh_every_s, window_days, stale, rows}. Rates are
JSON numbers in 0..1 (null when there is nothing to divide by); money stays a decimal string.
"""

import datetime

from django.utils import timezone
from rest_framework import serializers

# ---- query parameters ------------------------------------------------------------------------


class DailySummaryQuerySerializer(serializers.Serializer):
    """?job=<id>&since=<YYYY-MM-DD> (both optional; the view holds the last 90 days)."""

    job = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    since = serializers.DateField(required=False)

    def validate_since(self, value: datetime.date) -> datetime.date:
        today = timezone.now().astimezone(datetime.UTC).date()
        if value > today:
            raise serializers.ValidationError("since cannot be in the future.")
        return value


class TenantUsageQuerySerializer(serializers.Serializer):
    """?since=<ISO 8601 datetime> (optional; 24 hours ago by default, the view holds 30 days)."""

    DEFAULT_HOURS = 24

    since = serializers.DateTimeField(required=False)

    def validate_since(self, value: datetime.datetime) -> datetime.datetime:
        if value > timezone.now():
            raise serializers.ValidationError("since cannot be in the future.")
        return value

    def validate(self, attrs: dict) -> dict:
        attrs.setdefault("since", timezone.now() - datetime.timedelta(hours=self.DEFAULT_HOURS))
        return attrs


# ---- rows --------------------------------------------------------------------------------------


def _rate() -> serializers.FloatField:
    return serializers.FloatField(allow_null=True)


def _money() -> serializers.DecimalField:
    return serializers.DecimalField(max_digits=24, decimal_places=4)


class DailySummaryRowSerializer(serializers.Serializer):
    tenant_id = serializers.IntegerField()
    job_id = serializers.IntegerField()
    job_name = serializers.CharField()
    day = serializers.DateField()
    executions = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    matches = serializers.IntegerField()
    matched_records = serializers.IntegerField()
    exceptions = serializers.IntegerField()
    open_records = serializers.IntegerField()
    match_rate = _rate()
    amount_matched_left = _money()
    amount_matched_right = _money()
    amount_open = _money()


class JobPerformanceRowSerializer(serializers.Serializer):
    tenant_id = serializers.IntegerField()
    job_id = serializers.IntegerField()
    job_name = serializers.CharField()
    is_active = serializers.BooleanField()
    executions = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    success_rate = _rate()
    avg_duration_s = serializers.FloatField(allow_null=True)
    p95_duration_s = serializers.FloatField(allow_null=True)
    last_run_at = serializers.DateTimeField(allow_null=True)
    last_status = serializers.CharField(allow_null=True)
    avg_match_rate = _rate()
    last_match_rate = _rate()


class TenantUsageHourlyRowSerializer(serializers.Serializer):
    tenant_id = serializers.IntegerField()
    hour = serializers.DateTimeField()
    records_ingested = serializers.IntegerField()
    executions = serializers.IntegerField()
    matches_created = serializers.IntegerField()


class MatchAccuracyRowSerializer(serializers.Serializer):
    tenant_id = serializers.IntegerField()
    job_id = serializers.IntegerField()
    job_name = serializers.CharField()
    matches = serializers.IntegerField()
    auto = serializers.IntegerField()
    suggested = serializers.IntegerField()
    confirmed = serializers.IntegerField()
    rejected = serializers.IntegerField()
    reviewed = serializers.IntegerField()
    accuracy = _rate()
    # {pass_name: {matches, auto, suggested, confirmed, rejected, reviewed, accuracy,
    #  avg_confidence_confirmed, avg_confidence_rejected}}
    by_pass = serializers.DictField(child=serializers.DictField())


# ---- envelopes ---------------------------------------------------------------------------------


class _AnalyticsSerializer(serializers.Serializer):
    view = serializers.CharField()
    refreshed_at = serializers.DateTimeField(allow_null=True, help_text="End of the last successful refresh.")
    refresh_every_s = serializers.IntegerField()
    window_days = serializers.IntegerField(help_text="Days of history the view aggregates (UTC, today included).")
    stale = serializers.BooleanField(help_text="Not refreshed within twice its period (or never).")


class DailySummarySerializer(_AnalyticsSerializer):
    rows = DailySummaryRowSerializer(many=True)


class JobPerformanceSerializer(_AnalyticsSerializer):
    rows = JobPerformanceRowSerializer(many=True)


class TenantUsageHourlySerializer(_AnalyticsSerializer):
    rows = TenantUsageHourlyRowSerializer(many=True)


class MatchAccuracySerializer(_AnalyticsSerializer):
    rows = MatchAccuracyRowSerializer(many=True)
