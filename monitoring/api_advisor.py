"""/api/v1/database/performance/index-advisor: the index advisor's suggestions as JSON (the same
selector as the cockpit's Index advisor page)."""

from rest_framework import serializers

from monitoring.api import PerformanceView, _schema
from monitoring.selectors.advisor import index_advice


class AdvisedStatementSerializer(serializers.Serializer):
    queryid = serializers.IntegerField()
    query = serializers.CharField()
    calls = serializers.IntegerField()
    total_exec_ms = serializers.FloatField()
    mean_exec_ms = serializers.FloatField()
    cost_now = serializers.FloatField(allow_null=True, required=False, help_text="planner's estimate today")
    plan_method = serializers.CharField(allow_blank=True, required=False)
    plan_error = serializers.CharField(allow_null=True, required=False, help_text="why it could not be planned")
    seq_scan_now = serializers.BooleanField(required=False)
    cost_with_index = serializers.FloatField(allow_null=True, required=False, help_text="with the hypothetical index")
    uses_index = serializers.BooleanField(required=False)
    cost_reduction = serializers.FloatField(allow_null=True, required=False)


class EvidenceSerializer(serializers.Serializer):
    column = serializers.CharField()
    n_distinct = serializers.FloatField(allow_null=True)
    null_frac = serializers.FloatField(allow_null=True)
    correlation = serializers.FloatField(allow_null=True)
    rows_per_value = serializers.FloatField(allow_null=True)
    analyzed = serializers.BooleanField()


class IndexSuggestionSerializer(serializers.Serializer):
    schema = serializers.CharField()
    table = serializers.CharField()
    table_display = serializers.CharField()
    table_rows = serializers.IntegerField()
    columns = serializers.ListField(child=serializers.CharField())
    serves = serializers.ListField(child=serializers.CharField(), help_text="equality, equality+order, range, join...")
    status = serializers.ChoiceField(choices=["verified", "unverified", "rejected"])
    cost_reduction = serializers.FloatField(allow_null=True)
    create_sql = serializers.CharField()
    model = serializers.CharField(allow_null=True)
    migration = serializers.CharField(allow_blank=True)
    evidence = EvidenceSerializer(many=True)
    statements = AdvisedStatementSerializer(many=True)
    total_exec_ms = serializers.FloatField()


class IndexAdviceSerializer(serializers.Serializer):
    available = serializers.BooleanField()
    message = serializers.CharField(allow_blank=True)
    hypopg = serializers.BooleanField()
    hypopg_available = serializers.BooleanField()
    statements_considered = serializers.IntegerField(required=False)
    min_cost_reduction = serializers.FloatField()
    suggestions = IndexSuggestionSerializer(many=True)
    rejected = IndexSuggestionSerializer(many=True)


@_schema(IndexAdviceSerializer)
class IndexAdvisorView(PerformanceView):
    serializer_class = IndexAdviceSerializer

    def data(self, request):
        return index_advice()
