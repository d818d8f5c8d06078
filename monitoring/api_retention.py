"""/api/v1/database/performance/retention: every table under retention, its settings, what it
keeps and how the last run went (the same figures as the cockpit's Retention page)."""

from rest_framework import serializers

from monitoring.api import PerformanceView, _schema
from project.retention import retention_overview


class RetentionTableSerializer(serializers.Serializer):
    model = serializers.CharField(help_text="app_label.Model")
    table = serializers.CharField()
    mode = serializers.ChoiceField(choices=["archive", "delete"], help_text="archive: moved to archive.<table>")
    business = serializers.BooleanField(help_text="business records are archived, never deleted")
    enabled = serializers.BooleanField()
    keep_days = serializers.IntegerField()
    batch_size = serializers.IntegerField()
    age_field = serializers.CharField()
    kept = serializers.CharField(help_text="what this table's retention never removes")
    last_rows = serializers.IntegerField(allow_null=True, help_text="rows the last run moved")
    last_batches = serializers.IntegerField(allow_null=True)
    oldest_prunable_age_s = serializers.FloatField(
        allow_null=True, help_text="age now of the oldest row retention will remove (null: none waiting)"
    )
    behind = serializers.BooleanField(help_text="that row is older than keep_days plus RETENTION_BEHIND_SLACK_S")
    error = serializers.CharField(allow_blank=True)


class RetentionSerializer(serializers.Serializer):
    last_run_at = serializers.DateTimeField(allow_null=True)
    tables = RetentionTableSerializer(many=True)


@_schema(RetentionSerializer)
class RetentionView(PerformanceView):
    serializer_class = RetentionSerializer

    def data(self, request):
        return retention_overview()
