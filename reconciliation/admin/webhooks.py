"""Webhook endpoints (URL checked against the SSRF guard) and deliveries (redeliver by hand)."""

from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html

from reconciliation.admin.common import (
    MAX_BULK,
    ReconciliationBigTableAdmin,
    TenantIdFilter,
)
from reconciliation.errors import ReconciliationError
from reconciliation.models import (
    WebhookDelivery,
    WebhookEndpoint,
)
from reconciliation.webhooks import delivery as webhooks


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=500, assume_scheme="https")
    events = forms.MultipleChoiceField(choices=WebhookEndpoint.Event.choices, widget=forms.CheckboxSelectMultiple)
    rotate_secret = forms.BooleanField(
        required=False, help_text="Replace the signing secret; the new one is shown once, after saving."
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["tenant", "url", "events", "is_active"]

    def clean_url(self):
        url = self.cleaned_data["url"]
        if self.instance.pk and url == self.instance.url:
            return url  # unchanged: an endpoint whose host is down can still be deactivated
        try:
            webhooks.webhook_endpoint_validate_url(url)  # the services check it again on save
        except ReconciliationError as exc:
            raise forms.ValidationError(str(exc)) from None
        return url


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    """Endpoints are created and changed through reconciliation.webhooks.delivery (URL checked, audited).
    The secret is never displayed again after the message that follows its creation or rotation."""

    form = WebhookEndpointForm
    list_display = ["url", "tenant", "events", "is_active", "created_at"]
    list_filter = ["is_active"]
    list_select_related = ["tenant"]
    search_fields = ["url"]
    ordering = ["-id"]

    def get_fields(self, request, obj=None):
        fields = ["tenant", "url", "events", "is_active"]
        return [*fields, "rotate_secret", "created_at"] if obj else fields

    def get_readonly_fields(self, request, obj=None):
        return ["tenant", "created_at"] if obj else []

    def has_delete_permission(self, request, obj=None):
        return False  # no service deletes one (its delivery history goes with it): deactivate it

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if change:
            endpoint = webhooks.webhook_endpoint_update(
                endpoint=WebhookEndpoint.objects.get(pk=obj.pk),
                user=request.user,
                url=data["url"],
                events=data["events"],
                is_active=data["is_active"],
                rotate_secret=data.get("rotate_secret", False),
                request=request,
            )
            rotated = data.get("rotate_secret", False)
        else:
            endpoint = webhooks.webhook_endpoint_create(
                tenant=data["tenant"],
                url=data["url"],
                events=data["events"],
                is_active=data["is_active"],
                user=request.user,
                request=request,
            )
            rotated = True
        obj.pk, obj.created_at, obj.secret = endpoint.pk, endpoint.created_at, endpoint.secret
        if rotated:
            self.message_user(
                request,
                format_html(
                    "Signing secret of {}: <code>{}</code> — copy it now, it is not shown again.",
                    endpoint.url,
                    endpoint.secret,
                ),
                messages.WARNING,
            )


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReconciliationBigTableAdmin):
    list_display = ["id", "event", "endpoint", "tenant", "status", "attempts", "last_status_code", "next_attempt_at"]
    list_filter = ["status", "event", TenantIdFilter]
    list_select_related = ["endpoint", "tenant"]
    search_fields = ["=id"]
    ordering = ["-id"]
    actions = ["redeliver_selected"]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in WebhookDelivery._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_redeliver_permission(self, request):
        return request.user.has_perm("reconciliation.change_webhookdelivery")

    @admin.action(description="Redeliver selected deliveries now", permissions=["redeliver"])
    def redeliver_selected(self, request, queryset):
        ids = list(queryset.values_list("pk", flat=True)[: MAX_BULK * 10 + 1])
        if len(ids) > MAX_BULK * 10:
            self.message_user(request, f"Select at most {MAX_BULK * 10} deliveries at a time.", messages.ERROR)
            return
        count = webhooks.webhook_redeliver_bulk(delivery_ids=ids, user=request.user, request=request)
        self.message_user(request, f"{count} deliveries queued again.")
