"""Approvals API under /api/v1/approvals/: topics, atoms, versions, rules, audit log, and the
requesting staff member's notification subscriptions."""

import django_filters
from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from approvals import backtest, notifications, policy, rules, selectors, services
from approvals.models import (
    ApprovalRule,
    Atom,
    AutomationAuditLog,
    EntityType,
    NotificationSubscription,
    Topic,
    Version,
)
from approvals.policy import PolicyRule
from project.api.filters import IdFilter, IsoDateTimeFilter
from project.api.representation import as_row, datetime_renderer
from project.api.throttling import ScopedRateThrottle

BULK_MAX_IDS = 500
PREVIEW_MAX_VERSIONS = 10_000
DECIDE = ["approvals.decide_version"]


# --- Topics and atoms -----------------------------------------------------------------------------


class EntitySerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    title = serializers.CharField(max_length=300)
    body = serializers.CharField(allow_blank=True, required=False, default="")
    author = serializers.IntegerField(source="author_id", read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)


class EntityViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Content entities. Their title and body change only through approved versions."""

    serializer_class = EntitySerializer
    entity_type: str = ""

    def get_queryset(self) -> QuerySet:
        return services.ENTITY_MODELS[self.entity_type].objects.all()

    def perform_create(self, serializer):
        serializer.instance = services.entity_create(
            entity_type=self.entity_type,
            title=serializer.validated_data["title"],
            body=serializer.validated_data.get("body", ""),
            author=self.request.user,
            request=self.request,
        )

    def perform_destroy(self, instance):
        services.entity_delete(entity=instance, actor=self.request.user, request=self.request)


class TopicViewSet(EntityViewSet):
    entity_type = EntityType.TOPIC
    queryset = Topic.objects.none()  # for the schema; get_queryset does the work


class AtomViewSet(EntityViewSet):
    entity_type = EntityType.ATOM
    queryset = Atom.objects.none()


# --- Versions ---------------------------------------------------------------------------------------


class VersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Version
        fields = list(selectors.VERSION_API_FIELDS)
        read_only_fields = fields

    def to_representation(self, instance: Version | dict) -> dict:
        # What DRF's per-field machinery renders, written out (as tasks.api.TaskSerializer):
        # tests/approvals/test_serializers.py holds it equal to DRF's. The list passes rows
        # (selectors.version_rows), everything else model instances.
        return version_row_representation(
            as_row(instance, selectors.VERSION_ROW_FIELDS), timezone.get_current_timezone()
        )


def version_row_representation(row: dict, zone) -> dict:
    datetime_text = datetime_renderer(zone)
    return {
        "id": row["id"],
        "entity_type": str(row["entity_type"]),
        "entity_id": int(row["entity_id"]),
        "title": str(row["title"]),
        "content": str(row["content"]),
        "tags": row["tags"],
        "author": row["author_id"],
        "status": str(row["status"]),
        "decided_by": row["decided_by_id"],
        "decided_by_rule": row["decided_by_rule_id"],
        "decision_reason": str(row["decision_reason"]),
        "decided_at": datetime_text(row["decided_at"], zone),
        "reverted_by": row["reverted_by_id"],
        "reverted_at": datetime_text(row["reverted_at"], zone),
        "created_at": datetime_text(row["created_at"], zone),
    }


class VersionProposeSerializer(serializers.Serializer):
    entity_type = serializers.ChoiceField(choices=EntityType.choices)
    entity_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    title = serializers.CharField(max_length=300)
    content = serializers.CharField(max_length=100_000)
    tags = serializers.ListField(
        child=serializers.CharField(max_length=50), max_length=20, required=False, default=list
    )


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


class BulkDecisionSerializer(ReasonSerializer):
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=2**63 - 1), min_length=1, max_length=BULK_MAX_IDS
    )


BulkDecisionResult = inline_serializer(
    "BulkDecisionResult",
    {
        "decided": serializers.ListField(child=serializers.IntegerField()),
        "already_decided": serializers.ListField(child=serializers.IntegerField()),
    },
)


class VersionFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=Version.Status.choices)
    entity_type = django_filters.ChoiceFilter(choices=EntityType.choices)
    entity_id = IdFilter()
    author = IdFilter(field_name="author_id")
    created_after = IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Version
        fields = []


class VersionViewSet(
    mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    serializer_class = VersionSerializer
    filterset_class = VersionFilter
    queryset = Version.objects.none()
    # Newest first by primary key: unique and indexed, so versions need no (created_at, id) index.
    cursor_ordering = ("-id",)
    action_permissions = dict.fromkeys(("approve", "reject", "revert", "bulk_approve", "bulk_reject"), DECIDE)

    def get_queryset(self):
        # The list renders rows; the other actions read model instances.
        return selectors.version_rows() if self.action == "list" else selectors.version_list()

    def get_serializer_class(self):
        return VersionProposeSerializer if self.action == "create" else VersionSerializer

    @extend_schema(request=VersionProposeSerializer, responses={201: VersionSerializer})
    def create(self, request, *args, **kwargs):
        """Propose new content for a topic or atom."""
        params = VersionProposeSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        version = services.version_propose(author=request.user, request=request, **params.validated_data)
        return Response(VersionSerializer(version).data, status=status.HTTP_201_CREATED)

    def _decide_one(self, request, pk, approve: bool):
        params = ReasonSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        if not Version.objects.filter(pk=pk).exists():
            raise NotFound()
        services.versions_decide(
            version_ids=[int(pk)],
            approve=approve,
            user=request.user,
            reason=params.validated_data["reason"],
            request=request,
            single=True,
        )
        return Response(VersionSerializer(Version.objects.get(pk=pk)).data)

    @extend_schema(request=ReasonSerializer, responses=VersionSerializer)
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        """Approve a pending (or reverted) version and apply it to its entity."""
        return self._decide_one(request, pk, approve=True)

    @extend_schema(request=ReasonSerializer, responses=VersionSerializer)
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        return self._decide_one(request, pk, approve=False)

    @extend_schema(request=ReasonSerializer, responses=VersionSerializer)
    @action(detail=True, methods=["post"])
    def revert(self, request, pk=None):
        """Undo an approval or rejection (counts toward the automation's false-positive rate)."""
        params = ReasonSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        if not Version.objects.filter(pk=pk).exists():
            raise NotFound()
        version = services.version_revert(
            version_id=int(pk), user=request.user, reason=params.validated_data["reason"], request=request
        )
        return Response(VersionSerializer(version).data)

    def _decide_many(self, request, approve: bool):
        params = BulkDecisionSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        decision = services.versions_decide(
            version_ids=params.validated_data["ids"],
            approve=approve,
            user=request.user,
            reason=params.validated_data["reason"],
            request=request,
        )
        return Response({"decided": decision.decided, "already_decided": decision.already_decided})

    @extend_schema(request=BulkDecisionSerializer, responses=BulkDecisionResult)
    @action(detail=False, methods=["post"], url_path="bulk-approve")
    def bulk_approve(self, request):
        """Approve up to 500 versions in one transaction; already decided ones are reported, not changed."""
        return self._decide_many(request, approve=True)

    @extend_schema(request=BulkDecisionSerializer, responses=BulkDecisionResult)
    @action(detail=False, methods=["post"], url_path="bulk-reject")
    def bulk_reject(self, request):
        return self._decide_many(request, approve=False)


class PendingCountView(APIView):
    """Versions waiting for a decision: from a cache at most PENDING_COUNT_CACHE_TTL_S (10 s) old,
    dropped on every decision. Needs approvals.view_version."""

    queryset = Version.objects.none()  # for ModelPermissions: view_version
    # The admin badge polls this every 10 s per open tab: its own budget, not the user's 100/min.
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "pending_count"

    @extend_schema(responses=inline_serializer("PendingCount", {"pending": serializers.IntegerField()}))
    def get(self, request):
        return Response({"pending": selectors.pending_count_cached()})


# --- Rules --------------------------------------------------------------------------------------------


class RuleSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApprovalRule
        fields = [
            "id",
            "name",
            "is_active",
            "mode",
            "priority",
            "action",
            "scope_entity_type",
            "scope_tags",
            "conditions",
            "revision",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "revision", "created_at", "updated_at"]

    def validate_conditions(self, value):
        try:
            rules.validate_conditions(value)
        except rules.RuleInvalid as exc:
            raise ValidationError(f"{exc.path}: {exc.message}", code="invalid_rule") from None
        return value

    def validate(self, attrs):
        instance = self.instance
        entity_type = attrs.get("scope_entity_type", instance.scope_entity_type if instance else "")
        tags = attrs.get("scope_tags", instance.scope_tags if instance else [])
        try:
            policy.validate_scope(entity_type=entity_type or "", tags=tags)
        except rules.RuleInvalid as exc:
            raise ValidationError({exc.path: [exc.message]}, code="invalid_rule") from None
        return attrs


class BacktestQuerySerializer(serializers.Serializer):
    days = serializers.IntegerField(
        min_value=1, max_value=backtest.MAX_BACKTEST_DAYS, default=settings.AUTOMATION_BACKTEST_DEFAULT_DAYS
    )


class BacktestCountsSerializer(serializers.Serializer):
    would_decide = serializers.IntegerField()
    would_approve = serializers.IntegerField()
    would_reject = serializers.IntegerField()
    left_for_staff = serializers.IntegerField()
    agreements = serializers.IntegerField()
    false_approvals = serializers.IntegerField()
    false_rejections = serializers.IntegerField()
    agreement_rate = serializers.FloatField(allow_null=True)


class RuleBacktestCountsSerializer(BacktestCountsSerializer):
    rule_id = serializers.IntegerField()


class BacktestSerializer(BacktestCountsSerializer):
    days = serializers.IntegerField()
    evaluated = serializers.IntegerField(help_text="Versions decided in the window.")
    by_rule = RuleBacktestCountsSerializer(many=True)


class EvaluationSerializer(serializers.Serializer):
    recorded = serializers.IntegerField(help_text="Versions it would have decided or left, this revision.")
    compared = serializers.IntegerField(help_text="Of those it would have decided, decided by a person since.")
    agreements = serializers.IntegerField()
    disagreement_rate = serializers.FloatField(allow_null=True)


def _backtest_days(request) -> int:
    query = BacktestQuerySerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    return query.validated_data["days"]


class RuleViewSet(viewsets.ModelViewSet):
    serializer_class = RuleSerializer
    queryset = ApprovalRule.objects.none()
    read_only_actions = ("preview", "backtest", "policy_backtest", "evaluation")
    action_permissions = {
        "activate": ["approvals.change_approvalrule"],
        "deactivate": ["approvals.change_approvalrule"],
    }

    def get_queryset(self):
        return selectors.rule_list().order_by("priority", "id")

    def perform_create(self, serializer):
        serializer.instance = services.rule_create(
            actor=self.request.user, request=self.request, **serializer.validated_data
        )

    def perform_update(self, serializer):
        serializer.instance = services.rule_update(
            rule=serializer.instance, data=serializer.validated_data, actor=self.request.user, request=self.request
        )

    def perform_destroy(self, instance):
        services.rule_delete(rule=instance, actor=self.request.user, request=self.request)

    @extend_schema(request=None, responses=RuleSerializer)
    @action(detail=True, methods=["post"])
    def activate(self, request, pk=None):
        """Add this rule to the active policy (in its mode: live, or evaluate)."""
        rule = services.rule_set_active(rule=self.get_object(), active=True, actor=request.user, request=request)
        return Response(RuleSerializer(rule).data)

    @extend_schema(request=None, responses=RuleSerializer)
    @action(detail=True, methods=["post"])
    def deactivate(self, request, pk=None):
        rule = services.rule_set_active(rule=self.get_object(), active=False, actor=request.user, request=request)
        return Response(RuleSerializer(rule).data)

    @extend_schema(parameters=[BacktestQuerySerializer], responses=BacktestSerializer)
    @action(detail=True, methods=["get"])
    def backtest(self, request, pk=None):
        """What this rule alone would have decided on the versions decided in the last `days` days."""
        rule = self.get_object()
        result = backtest.policy_backtest([PolicyRule.of(rule)], days=_backtest_days(request))
        return Response(result.as_dict())

    @extend_schema(parameters=[BacktestQuerySerializer], responses=BacktestSerializer)
    @action(detail=False, methods=["get"], url_path="policy-backtest")
    def policy_backtest(self, request):
        """What the active policy's live rules, in priority order, would have decided on the
        versions decided in the last `days` days."""
        days = _backtest_days(request)
        return Response(backtest.policy_backtest(selectors.active_policy().live, days=days).as_dict())

    @extend_schema(responses=EvaluationSerializer)
    @action(detail=True, methods=["get"])
    def evaluation(self, request, pk=None):
        """How this rule, in evaluate mode, compares with what staff decided (its current revision)."""
        rule = self.get_object()
        return Response(selectors.evaluation_agreement(rule.pk, revision=rule.revision))

    @extend_schema(
        responses=inline_serializer(
            "RulePreview",
            {
                "action": serializers.CharField(),
                "evaluated": serializers.IntegerField(),
                "matched": serializers.IntegerField(),
                "sample": VersionSerializer(many=True),
            },
        )
    )
    @action(detail=True, methods=["get"])
    def preview(self, request, pk=None):
        """What this rule would decide now among the oldest 10,000 pending versions; writes nothing."""
        rule = self.get_object()
        evaluated, matched, sample = selectors.rule_preview(rule, limit=PREVIEW_MAX_VERSIONS)
        return Response(
            {
                "action": rule.action,
                "evaluated": evaluated,
                "matched": matched,
                "sample": VersionSerializer(sample, many=True).data,
            }
        )


# --- Audit log ------------------------------------------------------------------------------------------


class AuditLogSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    rule_id = serializers.IntegerField()
    rule_revision = serializers.IntegerField()
    version_id = serializers.IntegerField()
    decision = serializers.CharField()
    reason = serializers.CharField()
    duration_ms = serializers.FloatField()


class AuditLogFilter(django_filters.FilterSet):
    rule = IdFilter(field_name="rule_id")
    version = IdFilter(field_name="version_id")
    decision = django_filters.ChoiceFilter(choices=[("approved", "approved"), ("rejected", "rejected")])
    created_after = IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AutomationAuditLog
        fields = []


class AuditLogViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = AuditLogSerializer
    filterset_class = AuditLogFilter
    queryset = AutomationAuditLog.objects.none()

    def get_queryset(self):
        return AutomationAuditLog.objects.all()


# --- Notification subscriptions ---------------------------------------------------------------------


def _threshold(min_value: int, max_value: int = notifications.INTEGER_MAX, **kwargs) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=min_value, max_value=max_value, allow_null=True, required=False, **kwargs)


class SubscriptionSerializer(serializers.Serializer):
    """Types and ranges here; which parameters a kind takes: notifications.subscription_validate."""

    id = serializers.IntegerField(read_only=True)
    kind = serializers.ChoiceField(choices=NotificationSubscription.Kind.choices)
    pending_above = _threshold(0, help_text="backlog: fires above this many pending versions")
    oldest_pending_minutes = _threshold(1, help_text="backlog: fires when the oldest pending is older")
    disagreement_percent = _threshold(0, 99, help_text="rule_disagreement: fires above this % disagreement")
    skips_above = _threshold(0, help_text="automation_skips: fires above this many guard skips in the window")
    interval_minutes = serializers.IntegerField(
        min_value=1, max_value=notifications.INTERVAL_MINUTES_MAX, default=60, help_text="at most one digest per"
    )
    enabled = serializers.BooleanField(default=True)
    last_sent_at = serializers.DateTimeField(read_only=True, allow_null=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)


class NotificationSubscriptionViewSet(viewsets.ModelViewSet):
    """Your notification subscriptions (staff only): digest emails when approvals conditions fire
    (docs/approvals-rules.md#notifications). Nobody sees or changes another person's here."""

    serializer_class = SubscriptionSerializer
    queryset = NotificationSubscription.objects.none()
    # Personal settings of any staff member, like the admin's: no model permission needed.
    permission_classes = [IsAdminUser]
    cursor_ordering = ("-id",)

    def get_queryset(self):
        return notifications.subscription_list(user=self.request.user)

    def perform_create(self, serializer):
        serializer.instance = notifications.subscription_create(user=self.request.user, **serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = notifications.subscription_update(
            subscription=serializer.instance, data=serializer.validated_data
        )

    def perform_destroy(self, instance):
        notifications.subscription_delete(subscription=instance)
