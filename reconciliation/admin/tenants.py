"""Tenants and their members (the API's tenant mechanism; staff are not limited by it)."""

from django.contrib import admin

from project.activity import activity_record
from reconciliation.admin.common import (
    IdOnlyRawIdWidget,
)
from reconciliation.engine import services
from reconciliation.models import (
    Tenant,
    TenantMembership,
)


class TenantMembershipInline(admin.TabularInline):
    model = TenantMembership
    extra = 0
    fields = ["user", "member", "role", "created_at"]
    readonly_fields = ["member", "created_at"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user", "tenant")  # both in its __str__

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "user":
            kwargs["widget"] = IdOnlyRawIdWidget(db_field.remote_field, self.admin_site)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description="Member")
    def member(self, obj: TenantMembership):
        return obj.user.get_username() if obj.user_id else ""


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    """Tenants and their members (the API's tenant scope); no service owns these plain rows, so
    the admin saves them itself and records each change in ActivityLog."""

    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "=slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [TenantMembershipInline]
    ordering = ["name"]

    def has_delete_permission(self, request, obj=None):
        return False  # a tenant's delete cascades to millions of records: not a click in the admin

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        activity_record(
            category=services.CATEGORY,
            action="tenant_update" if change else "tenant_create",
            user=request.user,
            entity_type="reconciliation.tenant",
            entity_id=obj.pk,
            metadata={"fields": sorted(form.changed_data)},
            request=request,
            tenant_id=obj.pk,
        )

    def save_formset(self, request, form, formset, change):
        super().save_formset(request, form, formset, change)
        changed = {
            "added": [m.user_id for m in formset.new_objects],
            "changed": [m.user_id for m, _ in formset.changed_objects],
            "removed": [m.user_id for m in formset.deleted_objects],
        }
        if any(changed.values()):
            activity_record(
                category=services.CATEGORY,
                action="tenant_memberships_update",
                user=request.user,
                entity_type="reconciliation.tenant",
                entity_id=form.instance.pk,
                metadata=changed,
                request=request,
                tenant_id=form.instance.pk,
            )
