"""Review of the matcher's work: matches (confirm, reject, unmatch, match by hand) and the
exceptions queue (records no execution could match, and why)."""

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.response import Response

from project.api.filters import DecimalFilter, IdFilter
from reconciliation import selectors
from reconciliation.api.common import Role, domain_errors_to_http
from reconciliation.api.tenancy import TenantScopedViewSet, has_role, roles_of
from reconciliation.models import (
    Match,
    ReconciliationException,
    Record,
)
from reconciliation.review import services


class MatchSerializer(serializers.ModelSerializer):
    class Meta:
        model = Match
        fields = [
            "id",
            "matched_at",
            "job_id",
            "execution_id",
            "pass_name",
            "status",
            "confidence",
            "left_ids",
            "right_ids",
            "left_amount",
            "right_amount",
            "reviewed_by_id",
            "reviewed_at",
            "note",
        ]


class ManualMatchSerializer(serializers.Serializer):
    left_ids = serializers.ListField(child=serializers.IntegerField(min_value=1), min_length=1, max_length=50)
    right_ids = serializers.ListField(child=serializers.IntegerField(min_value=1), min_length=1, max_length=50)
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class NoteSerializer(serializers.Serializer):
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class ResolveSerializer(serializers.Serializer):
    note = serializers.CharField(max_length=2000)


class ReconciliationExceptionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ReconciliationException
        fields = [
            "id",
            "created_at",
            "job_id",
            "execution_id",
            "record_id",
            "side",
            "amount",
            "reason",
            "resolved_at",
            "resolved_by_id",
            "resolution",
        ]


class MatchFilter(django_filters.FilterSet):
    job = IdFilter(field_name="job_id")
    execution = IdFilter(field_name="execution_id")
    status = django_filters.ChoiceFilter(choices=Match.Status.choices)
    pass_name = django_filters.ChoiceFilter(field_name="pass_name", choices=Match.Pass.choices)
    confidence_min = DecimalFilter(field_name="confidence", lookup_expr="gte")
    confidence_max = DecimalFilter(field_name="confidence", lookup_expr="lte")
    amount_min = DecimalFilter(field_name="left_amount", lookup_expr="gte")
    amount_max = DecimalFilter(field_name="left_amount", lookup_expr="lte")

    class Meta:
        model = Match
        fields = []


class ReconciliationExceptionFilter(django_filters.FilterSet):
    job = IdFilter(field_name="job_id")
    execution = IdFilter(field_name="execution_id")
    reason = django_filters.ChoiceFilter(choices=ReconciliationException.Reason.choices)
    side = django_filters.ChoiceFilter(choices=Record.Side.choices)
    open = django_filters.BooleanFilter(field_name="resolved_at", lookup_expr="isnull")
    amount_min = DecimalFilter(field_name="amount", lookup_expr="gte")
    amount_max = DecimalFilter(field_name="amount", lookup_expr="lte")

    class Meta:
        model = ReconciliationException
        fields = []


class MatchViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Matches of your tenants; confirm or reject suggested ones, match by hand, unmatch."""

    serializer_class = MatchSerializer
    queryset = Match.objects.none()
    lookup_field = "id"
    lookup_url_kwarg = "pk"
    cursor_ordering = ("-id",)
    filterset_class = MatchFilter

    def scoped_queryset(self, tenant_ids):
        return selectors.match_list(tenant_ids=tenant_ids)

    def _review(self, request, pk, service):
        params = NoteSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        match = self.get_object()  # 404 outside your tenants; 403 without the operator role
        match = service(
            match_id=match.id, tenant_ids=[match.tenant_id], user=request.user, note=params.validated_data["note"]
        )
        return Response(MatchSerializer(match).data)

    @extend_schema(request=NoteSerializer, responses=MatchSerializer)
    @action(detail=True, methods=["post"])
    @domain_errors_to_http
    def confirm(self, request, pk=None):
        return self._review(request, pk, services.match_confirm)

    @extend_schema(request=NoteSerializer, responses=MatchSerializer)
    @action(detail=True, methods=["post"])
    @domain_errors_to_http
    def reject(self, request, pk=None):
        return self._review(request, pk, services.match_reject)

    @extend_schema(request=NoteSerializer, responses=MatchSerializer)
    @action(detail=True, methods=["post"])
    @domain_errors_to_http
    def unmatch(self, request, pk=None):
        return self._review(request, pk, services.match_unmatch)

    @extend_schema(request=ManualMatchSerializer, responses={201: MatchSerializer})
    @domain_errors_to_http
    def create(self, request):
        """Match open records by hand: one or more per side, all of one job."""
        params = ManualMatchSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        ids = params.validated_data["left_ids"] + params.validated_data["right_ids"]
        tenant_ids = sorted(set(Record.objects.filter(pk__in=ids).values_list("tenant_id", flat=True)))
        visible = [t for t in tenant_ids if t in roles_of(request.user)]
        if len(visible) < len(tenant_ids) or not tenant_ids:
            raise NotFound("No such records.")
        if not all(has_role(request.user, tenant_id, Role.OPERATOR) for tenant_id in tenant_ids):
            raise PermissionDenied("You need the operator role to match records.")
        match = services.match_manual(tenant_ids=tenant_ids, user=request.user, **params.validated_data)
        return Response(MatchSerializer(match).data, status=status.HTTP_201_CREATED)


class ReconciliationExceptionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """The exceptions queue: records an execution could not match, and why."""

    serializer_class = ReconciliationExceptionSerializer
    queryset = ReconciliationException.objects.none()
    lookup_field = "id"
    lookup_url_kwarg = "pk"
    cursor_ordering = ("id",)
    filterset_class = ReconciliationExceptionFilter

    def scoped_queryset(self, tenant_ids):
        return selectors.exception_list(tenant_ids=tenant_ids)

    @extend_schema(request=ResolveSerializer, responses=ReconciliationExceptionSerializer)
    @action(detail=True, methods=["post"])
    @domain_errors_to_http
    def resolve(self, request, pk=None):
        params = ResolveSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        exception = self.get_object()
        exception = services.exception_resolve(
            exception_id=exception.id,
            tenant_ids=[exception.tenant_id],
            user=request.user,
            note=params.validated_data["note"],
        )
        return Response(ReconciliationExceptionSerializer(exception).data)
