"""Endpoints of the workflow (/api/v1/reconciliation/...): members, schedules, exceptions, periods.

Every viewset derives from TenantScopedViewSet: another tenant's rows are 404, and each action
needs its role in the row's tenant (members and sign-off: admin; other writes: operator).
"""

import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from project.api.filters import IdFilter
from reconciliation.api.common import require_role
from reconciliation.api.review import ReconciliationExceptionFilter, ReconciliationExceptionViewSet
from reconciliation.api.tenancy import TenantScopedViewSet, roles_of, tenant_ids_with_role
from reconciliation.engine import schedule
from reconciliation.models import ReconciliationException, ReconciliationJob, Tenant, TenantMembership
from reconciliation.review import services as review_services
from reconciliation.workflow import casework, membership, selectors, signoff
from reconciliation.workflow.ageing import BUCKET_NAMES, bucket_condition
from reconciliation.workflow.models import JobSchedule, Period, ScheduledRun

Role = TenantMembership.Role


class _OwnTenantField(serializers.PrimaryKeyRelatedField):
    """An id in a body among the user's own tenants' rows only: another tenant's id is the same
    400 `does_not_exist` as one that exists nowhere (no existence oracle)."""

    def get_queryset(self):
        request = self.context.get("request")
        tenant_ids = list(roles_of(request.user)) if request else []
        return self.model.objects.filter(**{self.tenant_lookup: tenant_ids})


@extend_schema_field(OpenApiTypes.INT)
class OwnTenantField(_OwnTenantField):
    model, tenant_lookup = Tenant, "pk__in"


@extend_schema_field(OpenApiTypes.INT)
class OwnJobField(_OwnTenantField):
    model, tenant_lookup = ReconciliationJob, "tenant_id__in"


# --- Members -----------------------------------------------------------------------------------


class MembershipSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = TenantMembership
        fields = ["id", "tenant", "user", "username", "role", "created_at"]
        read_only_fields = fields


class MembershipCreateSerializer(serializers.Serializer):
    tenant = OwnTenantField()
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.VIEWER)


class RoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class MembershipFilter(django_filters.FilterSet):
    tenant = IdFilter(field_name="tenant_id")
    role = django_filters.ChoiceFilter(choices=Role.choices)

    class Meta:
        model = TenantMembership
        fields = []


class MembershipViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Members of your tenants; a tenant's admins add, re-role and remove them (each change audited)."""

    serializer_class = MembershipSerializer
    queryset = TenantMembership.objects.none()
    cursor_ordering = ("id",)
    filterset_class = MembershipFilter
    role_for_action = {"create": Role.ADMIN, "partial_update": Role.ADMIN, "destroy": Role.ADMIN}

    def scoped_queryset(self, tenant_ids):
        return selectors.membership_list(tenant_ids=tenant_ids)

    @extend_schema(request=MembershipCreateSerializer, responses={201: MembershipSerializer})
    def create(self, request):
        params = MembershipCreateSerializer(data=request.data, context={"request": request})
        params.is_valid(raise_exception=True)
        tenant = params.validated_data["tenant"]
        require_role(request.user, tenant.pk, Role.ADMIN)
        created = membership.membership_add(
            tenant=tenant, username=params.validated_data["username"], role=params.validated_data["role"],
            user=request.user,
        )  # fmt: skip
        return Response(MembershipSerializer(created).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=RoleSerializer, responses=MembershipSerializer)
    def partial_update(self, request, pk=None):
        params = RoleSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        changed = membership.membership_change_role(
            membership=self.get_object(), role=params.validated_data["role"], user=request.user
        )
        return Response(MembershipSerializer(changed).data)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request, pk=None):
        membership.membership_remove(membership=self.get_object(), user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Schedules -----------------------------------------------------------------------------------


class ScheduleSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobSchedule
        fields = [
            "id", "job", "crontab", "is_enabled", "next_run_at", "last_run_at", "last_outcome", "last_reason",
            "last_execution", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


class ScheduleWriteSerializer(serializers.Serializer):
    job = OwnJobField()
    crontab = serializers.CharField(max_length=100, help_text="minute hour day-of-month month day-of-week (UTC)")
    is_enabled = serializers.BooleanField(default=True)


class ScheduleChangeSerializer(serializers.Serializer):
    crontab = serializers.CharField(max_length=100, required=False)
    is_enabled = serializers.BooleanField(required=False)


class ScheduledRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = ScheduledRun
        fields = ["id", "job", "due_at", "ran_at", "outcome", "reason", "execution"]


class ScheduleViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Job schedules (at most one per job): beat starts their runs when due."""

    serializer_class = ScheduleSerializer
    queryset = JobSchedule.objects.none()
    cursor_ordering = ("id",)

    def scoped_queryset(self, tenant_ids):
        return selectors.schedule_list(tenant_ids=tenant_ids)

    @extend_schema(request=ScheduleWriteSerializer, responses={201: ScheduleSerializer})
    def create(self, request):
        """Give a job its schedule (or replace it): 201."""
        params = ScheduleWriteSerializer(data=request.data, context={"request": request})
        params.is_valid(raise_exception=True)
        job = params.validated_data["job"]
        require_role(request.user, job.tenant_id, Role.OPERATOR)
        created = schedule.schedule_set(
            job=job, crontab=params.validated_data["crontab"], is_enabled=params.validated_data["is_enabled"],
            user=request.user,
        )  # fmt: skip
        return Response(ScheduleSerializer(created).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ScheduleChangeSerializer, responses=ScheduleSerializer)
    def partial_update(self, request, pk=None):
        params = ScheduleChangeSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        current = self.get_object()
        changed = schedule.schedule_set(
            job=current.job,
            crontab=params.validated_data.get("crontab", current.crontab),
            is_enabled=params.validated_data.get("is_enabled", current.is_enabled),
            user=request.user,
        )
        return Response(ScheduleSerializer(changed).data)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request, pk=None):
        schedule.schedule_delete(schedule=self.get_object(), user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses=ScheduledRunSerializer(many=True))
    @action(detail=True, methods=["get"])
    def runs(self, request, pk=None):
        """The schedule's runs, newest first: started, skipped (and why) or failed."""
        job_schedule = self.get_object()
        self.cursor_ordering = ("-id",)
        page = self.paginate_queryset(selectors.scheduled_runs_of(job_id=job_schedule.job_id))
        return self.get_paginated_response(ScheduledRunSerializer(page, many=True).data)


# --- Exceptions ----------------------------------------------------------------------------------


class ExceptionSerializer(serializers.ModelSerializer):
    age_bucket = serializers.ChoiceField(choices=BUCKET_NAMES, read_only=True)  # annotated by the selector

    class Meta:
        model = ReconciliationException
        fields = [
            "id", "created_at", "age_bucket", "job_id", "execution_id", "record_id", "side", "amount", "reason",
            "assigned_to_id", "assigned_at", "resolved_at", "resolved_by_id", "resolution", "resolution_code",
            "adjusting_amount",
        ]  # fmt: skip


class AssignSerializer(serializers.Serializer):
    assignee = serializers.IntegerField(min_value=1, max_value=2**63 - 1, allow_null=True,
                                        help_text="a member's user id; null unassigns")  # fmt: skip


class ResolveWithCodeSerializer(serializers.Serializer):
    code = serializers.ChoiceField(choices=ReconciliationException.ResolutionCode.choices, required=False)
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)
    adjusting_amount = serializers.DecimalField(max_digits=18, decimal_places=4, required=False, allow_null=True,
                                                default=None)  # fmt: skip


IDS = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=2**63 - 1), min_length=1,
                            max_length=casework.BULK_MAX)  # fmt: skip


class BulkAssignSerializer(AssignSerializer):
    ids = IDS


class BulkResolveSerializer(ResolveWithCodeSerializer):
    ids = IDS
    code = serializers.ChoiceField(choices=ReconciliationException.ResolutionCode.choices)


class BulkResultSerializer(serializers.Serializer):
    ids = serializers.ListField(child=serializers.IntegerField())
    count = serializers.IntegerField()


class ExceptionFilter(ReconciliationExceptionFilter):
    """The exceptions queue's filters, plus assignee, age bucket and resolution code."""

    assignee = IdFilter(field_name="assigned_to_id")
    unassigned = django_filters.BooleanFilter(field_name="assigned_to_id", lookup_expr="isnull")
    age = django_filters.ChoiceFilter(choices=[(name, name) for name in BUCKET_NAMES], method="filter_age")
    code = django_filters.ChoiceFilter(
        field_name="resolution_code", choices=ReconciliationException.ResolutionCode.choices
    )

    def filter_age(self, queryset, name, value):
        return queryset.filter(bucket_condition(value))


class ExceptionViewSet(ReconciliationExceptionViewSet):
    """The exceptions queue with its workflow: each exception's age bucket, assignee and
    resolution code; assign and resolve one or up to 1,000 at once; ageing figures."""

    serializer_class = ExceptionSerializer
    filterset_class = ExceptionFilter

    def scoped_queryset(self, tenant_ids):
        return selectors.exception_list(tenant_ids=tenant_ids)

    def _one(self, request, service, **kwargs):
        exception = self.get_object()
        service(ids=[exception.id], tenant_ids=[exception.tenant_id], user=request.user, **kwargs)
        return Response(self.get_serializer(self.get_queryset().get(id=exception.id)).data)

    @extend_schema(request=AssignSerializer, responses=ExceptionSerializer)
    @action(detail=True, methods=["post"])
    def assign(self, request, pk=None):
        params = AssignSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        return self._one(request, casework.exceptions_assign, assignee_id=params.validated_data["assignee"])

    @extend_schema(request=ResolveWithCodeSerializer, responses=ExceptionSerializer)
    @action(detail=True, methods=["post"])
    def resolve(self, request, pk=None):
        """Resolve with a code (and optional adjusting amount); without a code, a note alone
        resolves it as before the workflow (no code)."""
        params = ResolveWithCodeSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        if data.get("code"):
            return self._one(request, casework.exceptions_resolve, **data)
        if not data["note"].strip():
            raise ValidationError({"code": ["Give a resolution code (or at least a note)."]}, code="required")
        exception = self.get_object()
        review_services.exception_resolve(
            exception_id=exception.id, tenant_ids=[exception.tenant_id], user=request.user, note=data["note"]
        )
        return Response(self.get_serializer(self.get_queryset().get(id=exception.id)).data)

    @extend_schema(request=BulkAssignSerializer, responses=BulkResultSerializer)
    @action(detail=False, methods=["post"], url_path="bulk-assign")
    def bulk_assign(self, request):
        """Assign (or unassign) up to 1,000 open exceptions in one statement; all or nothing."""
        params = BulkAssignSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        ids = casework.exceptions_assign(
            ids=params.validated_data["ids"], tenant_ids=tenant_ids_with_role(request.user, Role.OPERATOR),
            assignee_id=params.validated_data["assignee"], user=request.user,
        )  # fmt: skip
        return Response({"ids": ids, "count": len(ids)})

    @extend_schema(request=BulkResolveSerializer, responses=BulkResultSerializer)
    @action(detail=False, methods=["post"], url_path="bulk-resolve")
    def bulk_resolve(self, request):
        """Resolve up to 1,000 open exceptions with one code in one statement; all or nothing."""
        params = BulkResolveSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = dict(params.validated_data)
        ids = casework.exceptions_resolve(
            ids=data.pop("ids"), tenant_ids=tenant_ids_with_role(request.user, Role.OPERATOR), user=request.user,
            **data,
        )  # fmt: skip
        return Response({"ids": ids, "count": len(ids)})

    @extend_schema(
        responses=inline_serializer(
            "ExceptionAgeing",
            {"buckets": inline_serializer("AgeBucketFigures", {"bucket": serializers.CharField(),
                                                               "count": serializers.IntegerField(),
                                                               "amount": serializers.CharField()}, many=True)},
        )
    )  # fmt: skip
    @action(detail=False, methods=["get"])
    def ageing(self, request):
        """Open exceptions per age bucket (count, amount), with the list's filters (job, assignee, ...)."""
        queryset = self.filter_queryset(self.get_queryset())
        return Response({"buckets": selectors.exception_ageing(queryset)})


# --- Periods -------------------------------------------------------------------------------------


class PeriodSerializer(serializers.ModelSerializer):
    class Meta:
        model = Period
        fields = ["id", "job", "starts_on", "ends_on", "status", "signed_off_by", "signed_off_at", "summary",
                  "created_at"]  # fmt: skip
        read_only_fields = fields


class PeriodCreateSerializer(serializers.Serializer):
    job = OwnJobField()
    starts_on = serializers.DateField()
    ends_on = serializers.DateField()


class SignOffSerializer(serializers.Serializer):
    carry_forward = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=2**63 - 1), required=False, default=list,
        max_length=10000, help_text="ids of open exceptions carried into the next period",
    )  # fmt: skip


class UnsignSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000)


class PeriodFilter(django_filters.FilterSet):
    job = IdFilter(field_name="job_id")
    status = django_filters.ChoiceFilter(choices=Period.Status.choices)

    class Meta:
        model = Period
        fields = []


class PeriodViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Reconciliation periods of jobs: balances, sign-off (admin) and un-signing (admin, audited)."""

    serializer_class = PeriodSerializer
    queryset = Period.objects.none()
    cursor_ordering = ("-id",)
    filterset_class = PeriodFilter
    role_for_action = {"sign_off": Role.ADMIN, "unsign": Role.ADMIN}

    def scoped_queryset(self, tenant_ids):
        return selectors.period_list(tenant_ids=tenant_ids)

    @extend_schema(request=PeriodCreateSerializer, responses={201: PeriodSerializer})
    def create(self, request):
        params = PeriodCreateSerializer(data=request.data, context={"request": request})
        params.is_valid(raise_exception=True)
        job = params.validated_data["job"]
        require_role(request.user, job.tenant_id, Role.OPERATOR)
        period = signoff.period_create(
            job=job, starts_on=params.validated_data["starts_on"], ends_on=params.validated_data["ends_on"],
            user=request.user,
        )  # fmt: skip
        return Response(PeriodSerializer(period).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=inline_serializer("PeriodSummary", {"period": PeriodSerializer(),
                                                                 "summary": serializers.DictField()}))  # fmt: skip
    @action(detail=True, methods=["get"])
    def summary(self, request, pk=None):
        """Opening and closing balance per side, open exceptions, adjustments, unexplained difference
        (live for an open period, as signed for a signed-off one)."""
        period = self.get_object()
        body = period.summary if period.status == Period.Status.SIGNED_OFF else signoff.period_summary(period)
        return Response({"period": PeriodSerializer(period).data, "summary": body})

    @extend_schema(request=SignOffSerializer, responses=PeriodSerializer)
    @action(detail=True, methods=["post"], url_path="sign-off")
    def sign_off(self, request, pk=None):
        params = SignOffSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        period = signoff.period_sign_off(
            period=self.get_object(), carry_forward_ids=params.validated_data["carry_forward"], user=request.user
        )
        return Response(PeriodSerializer(period).data)

    @extend_schema(request=UnsignSerializer, responses=PeriodSerializer)
    @action(detail=True, methods=["post"])
    def unsign(self, request, pk=None):
        params = UnsignSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        period = signoff.period_unsign(period=self.get_object(), reason=params.validated_data["reason"],
                                       user=request.user)  # fmt: skip
        return Response(PeriodSerializer(period).data)
