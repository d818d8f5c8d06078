"""Reconciliation jobs: their rules (validated JSON), "Run now" and "Dry run"."""

from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from reconciliation.admin.common import (
    MAX_RUN_JOBS,
    RUN_JOBS,
    PrettyJSONField,
    TenantIdFilter,
    queue_links,
)
from reconciliation.engine import services
from reconciliation.engine.rules import parse_rules
from reconciliation.errors import InvalidRules, ReconciliationError
from reconciliation.models import (
    ReconciliationJob,
)


class ReconciliationJobForm(forms.ModelForm):
    rules = PrettyJSONField(
        required=False,
        widget=forms.Textarea(
            attrs={"rows": 18, "cols": 80, "spellcheck": "false", "style": "font-family: monospace; width: 40em"}
        ),
        help_text="Matching rules as JSON; every key is optional ({} takes the defaults). "
        "Keys and defaults: docs/reconciliation.md.",
    )

    class Meta:
        model = ReconciliationJob
        fields = ["tenant", "name", "is_active", "rules"]

    def clean_rules(self):
        rules = self.cleaned_data["rules"] or {}
        try:
            parse_rules(rules)  # what the services check again on save
        except InvalidRules as exc:
            raise forms.ValidationError([f"{path}: {message}" for path, message in exc.errors.items()]) from None
        return rules


def _run_action(dry_run: bool):
    label = "Dry run" if dry_run else "Run now"

    def run(modeladmin, request, queryset):
        jobs = list(queryset.order_by("pk")[: MAX_RUN_JOBS + 1])
        if len(jobs) > MAX_RUN_JOBS:
            modeladmin.message_user(request, f"Select at most {MAX_RUN_JOBS} jobs at a time.", messages.ERROR)
            return
        for job in jobs:
            try:
                execution = services.execution_start(job=job, dry_run=dry_run, user=request.user)
            except ReconciliationError as exc:
                modeladmin.message_user(request, f"{job.name}: {exc}", messages.ERROR)
                continue
            url = reverse("admin:reconciliation_execution_change", args=[execution.pk])
            modeladmin.message_user(
                request,
                format_html(
                    "{}: {} queued as <a href='{}'>execution {}</a>.", job.name, label.lower(), url, execution.pk
                ),
            )

    run.__name__ = "dry_run_selected" if dry_run else "run_selected"
    run.short_description = f"{label} (queue an execution of the selected jobs)"
    run.allowed_permissions = ("run",)
    return run


@admin.register(ReconciliationJob)
class ReconciliationJobAdmin(admin.ModelAdmin):
    form = ReconciliationJobForm
    list_display = ["name", "tenant", "is_active", "created_at"]
    list_filter = ["is_active", TenantIdFilter]
    list_select_related = ["tenant"]
    search_fields = ["name", "=id"]
    ordering = ["-created_at", "-id"]
    actions = [_run_action(False), _run_action(True)]

    def has_run_permission(self, request):
        return request.user.has_perm(RUN_JOBS)

    def has_delete_permission(self, request, obj=None):
        return False  # no service deletes a job (its records, matches and reports go with it); deactivate it

    def get_readonly_fields(self, request, obj=None):
        # A job's records belong to its tenant: moving the job would move them across tenants.
        return ["tenant", "created_at", "updated_at"] if obj else []

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if change:
            changes = {name: data[name] for name in form.changed_data if name in ("name", "is_active", "rules")}
            if changes:
                services.job_update(job=ReconciliationJob.objects.get(pk=obj.pk), user=request.user, **changes)
        else:
            created = services.job_create(
                tenant=data["tenant"],
                name=data["name"],
                rules=data["rules"],
                is_active=data["is_active"],
                user=request.user,
            )
            obj.pk, obj.created_at, obj.updated_at = created.pk, created.created_at, created.updated_at

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), **queue_links(request, job=object_id)}
        return super().change_view(request, object_id, form_url, extra_context)
