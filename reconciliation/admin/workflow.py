"""Admin of the workflow: job schedules (next and last run, outcome, recent runs) and periods
(balances and sign-off state, read-only: sign-off and un-signing go through the API's audited
services). Imported by reconciliation/admin/__init__.py."""

from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from reconciliation.admin.common import TenantIdFilter
from reconciliation.engine import schedule as schedule_services
from reconciliation.workflow.errors import InvalidWorkflowInput
from reconciliation.workflow.models import JobSchedule, Period, ScheduledRun

RECENT_RUNS = 20


class JobScheduleForm(forms.ModelForm):
    class Meta:
        model = JobSchedule
        fields = ["job", "crontab", "is_enabled"]

    def clean_crontab(self):
        crontab = self.cleaned_data["crontab"]
        try:
            schedule_services.parse_crontab(crontab)
        except InvalidWorkflowInput as error:
            raise forms.ValidationError(str(error)) from None
        return crontab


@admin.register(JobSchedule)
class JobScheduleAdmin(admin.ModelAdmin):
    form = JobScheduleForm
    list_display = ["job", "tenant", "crontab", "is_enabled", "next_run_at", "last_run_at", "last_outcome",
                    "last_reason", "last_execution_link"]  # fmt: skip
    list_filter = ["is_enabled", "last_outcome", TenantIdFilter]
    list_select_related = ["job", "tenant"]
    raw_id_fields = ["job"]
    ordering = ["next_run_at", "id"]
    readonly_fields = ["next_run_at", "last_run_at", "last_outcome", "last_reason", "last_execution_link",
                       "recent_runs"]  # fmt: skip

    def get_readonly_fields(self, request, obj=None):
        return ["job", *self.readonly_fields] if obj else self.readonly_fields

    @admin.display(description="last execution")
    def last_execution_link(self, obj):
        if not obj.last_execution_id:
            return "-"
        url = reverse("admin:reconciliation_execution_change", args=[obj.last_execution_id])
        return format_html('<a href="{}">{}</a>', url, obj.last_execution_id)

    @admin.display(description=f"recent runs (last {RECENT_RUNS})")
    def recent_runs(self, obj):
        runs = ScheduledRun.objects.filter(job_id=obj.job_id).order_by("-id")[:RECENT_RUNS]
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((run.due_at, run.outcome, run.reason, run.execution_id or "") for run in runs),
        )
        return format_html(
            "<table><tr><th>due</th><th>outcome</th><th>reason</th><th>execution</th></tr>{}</table>", rows
        )

    def save_model(self, request, obj, form, change):
        # Through the service: the next run is computed and the change audited.
        saved = schedule_services.schedule_set(
            job=obj.job, crontab=obj.crontab, is_enabled=obj.is_enabled, user=request.user
        )
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        schedule_services.schedule_delete(schedule=obj, user=request.user)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            schedule_services.schedule_delete(schedule=obj, user=request.user)
        messages.info(request, "Schedules deleted (each audited).")


@admin.register(Period)
class PeriodAdmin(admin.ModelAdmin):
    list_display = ["id", "job", "tenant", "starts_on", "ends_on", "status", "signed_off_by", "signed_off_at",
                    "unexplained_difference"]  # fmt: skip
    list_filter = ["status", TenantIdFilter]
    list_select_related = ["job", "tenant", "signed_off_by"]
    ordering = ["-id"]

    @admin.display(description="unexplained difference (at sign-off)")
    def unexplained_difference(self, obj):
        return obj.summary.get("unexplained_difference", "-")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
