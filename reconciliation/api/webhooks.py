"""Webhook endpoints of a tenant and the deliveries made to them (redeliver one by hand)."""

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from project.api.filters import IdFilter
from reconciliation import selectors
from reconciliation.api.common import Role, TenantField, domain_errors_to_http, require_tenant_admin
from reconciliation.api.tenancy import TenantScopedViewSet
from reconciliation.models import (
    WebhookDelivery,
    WebhookEndpoint,
)
from reconciliation.webhooks import delivery as webhooks


class WebhookEndpointSerializer(serializers.ModelSerializer):
    tenant = TenantField()
    events = serializers.ListField(child=serializers.ChoiceField(choices=WebhookEndpoint.Event.choices))

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "tenant", "url", "events", "is_active", "created_at"]
        read_only_fields = ["id", "created_at"]

    def validate_tenant(self, tenant):
        require_tenant_admin(self.context["request"].user, tenant)
        return tenant


class WebhookEndpointCreatedSerializer(WebhookEndpointSerializer):
    """Shown once, at creation: the secret receivers verify signatures with."""

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]


class WebhookDeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "endpoint",
            "event",
            "payload",
            "status",
            "attempts",
            "next_attempt_at",
            "last_status_code",
            "last_error",
            "created_at",
            "delivered_at",
        ]


class WebhookDeliveryFilter(django_filters.FilterSet):
    endpoint = IdFilter(field_name="endpoint_id")

    class Meta:
        model = WebhookDelivery
        fields = ["status", "event"]


class WebhookEndpointViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    TenantScopedViewSet,
):
    serializer_class = WebhookEndpointSerializer
    queryset = WebhookEndpoint.objects.none()
    cursor_ordering = ("-id",)
    role_for_action = {"create": Role.ADMIN, "update": Role.ADMIN, "partial_update": Role.ADMIN}

    def scoped_queryset(self, tenant_ids):
        return selectors.webhook_endpoint_list(tenant_ids=tenant_ids)

    @extend_schema(responses={201: WebhookEndpointCreatedSerializer})
    @domain_errors_to_http
    def create(self, request, *args, **kwargs):
        params = WebhookEndpointSerializer(data=request.data, context={"request": request})
        params.is_valid(raise_exception=True)
        endpoint = webhooks.webhook_endpoint_create(user=request.user, request=request, **params.validated_data)
        return Response(WebhookEndpointCreatedSerializer(endpoint).data, status=status.HTTP_201_CREATED)

    @domain_errors_to_http
    def update(self, request, *args, **kwargs):
        endpoint = self.get_object()
        params = WebhookEndpointSerializer(
            endpoint, data=request.data, partial=kwargs.get("partial", False), context={"request": request}
        )
        params.is_valid(raise_exception=True)
        changes = {k: v for k, v in params.validated_data.items() if k in ("url", "events", "is_active")}
        endpoint = webhooks.webhook_endpoint_update(endpoint=endpoint, user=request.user, request=request, **changes)
        return Response(WebhookEndpointSerializer(endpoint).data)


class WebhookDeliveryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    serializer_class = WebhookDeliverySerializer
    queryset = WebhookDelivery.objects.none()
    cursor_ordering = ("-id",)
    filterset_class = WebhookDeliveryFilter

    def scoped_queryset(self, tenant_ids):
        return selectors.webhook_delivery_list(tenant_ids=tenant_ids)

    @extend_schema(request=None, responses=WebhookDeliverySerializer)
    @action(detail=True, methods=["post"])
    @domain_errors_to_http
    def redeliver(self, request, pk=None):
        delivery = webhooks.webhook_redeliver(delivery_id=self.get_object().pk, user=request.user, request=request)
        return Response(WebhookDeliverySerializer(delivery).data)
