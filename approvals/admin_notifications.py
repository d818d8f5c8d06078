"""Admin of notifications: every staff member edits their own subscriptions (superusers everyone's)
and reads the digests sent to them. Writes go through approvals.notifications' services."""

from django import forms
from django.contrib import admin
from django.utils.html import format_html, format_html_join

from approvals import notifications
from approvals.exceptions import SubscriptionInvalid
from approvals.models import NotificationDigest, NotificationSubscription
from project.admin import BigTableAdmin
from project.admin_widgets import ReadOnlyAdminMixin

EDITABLE = ("kind", *notifications.PARAMETERS, "interval_minutes", "enabled")


def _is_staff(request) -> bool:
    return request.user.is_active and request.user.is_staff


def _owns(request, obj) -> bool:
    return obj is None or request.user.is_superuser or obj.user_id == request.user.pk


class OwnRowsAdminMixin:
    """Personal rows: any staff member reaches them (no model permission needed), sees their own;
    a superuser sees and manages everyone's."""

    def has_module_permission(self, request):
        return _is_staff(request)

    def has_view_permission(self, request, obj=None):
        return _is_staff(request) and _owns(request, obj)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        return queryset if request.user.is_superuser else queryset.filter(user=request.user)


class SubscriptionForm(forms.ModelForm):
    owner = None  # set per request: the user a subscription made here belongs to (non-superusers)

    class Meta:
        model = NotificationSubscription
        fields = ["user", *EDITABLE]

    def clean(self):
        cleaned = super().clean()
        kind = cleaned.get("kind", self.instance.kind)
        try:
            notifications.subscription_validate(
                kind=kind,
                parameters={name: cleaned.get(name) for name in notifications.PARAMETERS},
                interval_minutes=cleaned.get("interval_minutes") or 0,
            )
        except SubscriptionInvalid as exc:
            self.add_error(exc.http_field if exc.http_field in self.fields else None, str(exc))
        user = cleaned.get("user") or self.owner or self.instance.user
        others = NotificationSubscription.objects.filter(user=user, kind=kind).exclude(pk=self.instance.pk)
        if kind and user and others.exists():
            self.add_error("kind", f"{user} already subscribes to {kind}; change that subscription.")
        return cleaned


@admin.register(NotificationSubscription)
class NotificationSubscriptionAdmin(OwnRowsAdminMixin, admin.ModelAdmin):
    form = SubscriptionForm
    list_display = ["kind", "user", "thresholds", "interval_minutes", "enabled", "last_sent_at"]
    list_filter = ["kind", "enabled"]
    list_select_related = ["user"]
    ordering = ["user_id", "kind"]
    autocomplete_fields = ["user"]

    def has_add_permission(self, request):
        return _is_staff(request)

    def has_change_permission(self, request, obj=None):
        return _is_staff(request) and _owns(request, obj)

    def has_delete_permission(self, request, obj=None):
        return _is_staff(request) and _owns(request, obj)

    def get_fields(self, request, obj=None):
        fields = [*EDITABLE, "last_sent_at"]
        return ["user", *fields] if request.user.is_superuser or obj is not None else fields

    def get_readonly_fields(self, request, obj=None):
        # The kind and owner stay: another condition, or another person's, is another subscription.
        return ["user", "kind", "last_sent_at"] if obj is not None else ["last_sent_at"]

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        return type(form.__name__, (form,), {"owner": request.user})

    @admin.display(description="Fires when")
    def thresholds(self, obj: NotificationSubscription) -> str:
        parts = {
            "pending_above": "pending > {}",
            "oldest_pending_minutes": "oldest pending > {} min",
            "disagreement_percent": "a rule in evaluate mode disagrees > {}%",
            "skips_above": "guard skips > {} in the window",
        }
        return " or ".join(
            text.format(getattr(obj, name)) for name, text in parts.items() if getattr(obj, name) is not None
        )

    def save_model(self, request, obj, form, change):
        data = {name: form.cleaned_data[name] for name in EDITABLE if name in form.cleaned_data}
        if change:
            notifications.subscription_update(subscription=obj, data=data)
            return
        owner = form.cleaned_data.get("user") if request.user.is_superuser else request.user
        created = notifications.subscription_create(user=owner or request.user, **data)
        obj.pk, obj.user = created.pk, created.user

    def delete_model(self, request, obj):
        notifications.subscription_delete(subscription=obj)

    def delete_queryset(self, request, queryset):
        for subscription in queryset:
            notifications.subscription_delete(subscription=subscription)


@admin.register(NotificationDigest)
class NotificationDigestAdmin(OwnRowsAdminMixin, ReadOnlyAdminMixin, BigTableAdmin):
    """Digests as sent. Grows with staff and time: no full COUNT (BigTableAdmin), newest first on
    digest_sent_idx (a staff member's own: digest_user_sent_idx)."""

    list_display = ["sent_at", "user", "email", "subject", "condition_list"]
    list_select_related = ["user"]
    ordering = ["-sent_at", "-id"]
    fields = ["sent_at", "user", "email", "subject", "condition_list"]
    readonly_fields = fields

    @admin.display(description="Conditions")
    def condition_list(self, obj: NotificationDigest):
        return format_html(
            "<ul style='margin:0'>{}</ul>",
            format_html_join("", "<li>{}</li>", ((condition.get("summary", ""),) for condition in obj.conditions)),
        )
