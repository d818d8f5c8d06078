"""The reconciliation admin: tenants, jobs (run now, dry run), executions, the suggested-match review
queue, the exceptions queue with candidates and manual matching, records, webhooks.

Staff permissions (Django model permissions, given per user or group):
- `reconciliation.view_execution` — see executions, the review queue and the exceptions queue
  (with an exception's candidates);
- `reconciliation.change_execution` — act in them: confirm / reject suggested matches, resolve
  exceptions, match an exception with a candidate by hand, cancel an execution;
- `reconciliation.add_execution` — the jobs' "Run now" and "Dry run" actions;
- `reconciliation.{view,add,change}_reconciliationjob`, `..._tenant`, `..._webhookendpoint`,
  `view_record`, `view_webhookdelivery` and `change_webhookdelivery` (redeliver) as their names say.

Staff are not limited by TenantMembership: that is the API's tenant mechanism, for tenants' own
users. Staff work across tenants (the services are called with every tenant's id) and filter the
queues by tenant when they want one.

Every write goes through the services (engine/, review/, webhooks/), which audit it in
ActivityLog. The queues (Match and ReconciliationException cannot be registered: composite primary
keys) are in admin/queues.py, served under ExecutionAdmin's URLs and listed in the admin index.
"""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models.fields.json import KT
from django.http import HttpResponseRedirect
from django.urls import path, reverse

from project.admin_widgets import ReadOnlyAdminMixin
from reconciliation.admin.common import (
    ACT_IN_QUEUES,
    MAX_BULK,
    VIEW_QUEUES,
    JobIdFilter,
    ReconciliationBigTableAdmin,
    TenantIdFilter,
    queue_links,
    summary_table_html,
)
from reconciliation.admin.queues import ExceptionDetailView, ExceptionsQueueView, ReviewQueueView
from reconciliation.engine import services
from reconciliation.errors import ReconciliationError
from reconciliation.models import (
    ExceptionsQueue,
    Execution,
    ReviewQueue,
)


class _QueueEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Lists a queue in the admin index and sidebar (through a table-less model, as the
    monitoring cockpit does) for users who may view executions; its page is the queue view."""

    queue_url_name = ""

    def has_module_permission(self, request):
        return request.user.has_perm(VIEW_QUEUES)

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm(VIEW_QUEUES)

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        return HttpResponseRedirect(reverse(self.queue_url_name))


@admin.register(ReviewQueue)
class ReviewQueueEntryAdmin(_QueueEntryAdmin):
    queue_url_name = "admin:reconciliation_review_queue"


@admin.register(ExceptionsQueue)
class ExceptionsQueueEntryAdmin(_QueueEntryAdmin):
    queue_url_name = "admin:reconciliation_exceptions_queue"


@admin.register(Execution)
class ExecutionAdmin(ReadOnlyAdminMixin, ReconciliationBigTableAdmin):
    """Executions, read-only (they are written by the matcher); cancel is an action. Its URLs
    also serve the review queue, the exceptions queue and an exception's page (admin/queues.py).
    Executions are added by the jobs' Run now / Dry run actions (services.execution_start)."""

    list_display = ["id", "job", "tenant", "status", "dry_run", "match_rate", "created_at", "finished_at"]
    list_filter = ["status", "dry_run", TenantIdFilter, JobIdFilter]
    list_select_related = ["job", "tenant"]
    search_fields = ["=id", "=job__id"]
    search_help_text = "Execution id or job id."
    ordering = ["-id"]
    actions = ["cancel_selected"]
    fields = [
        "job",
        "tenant",
        "status",
        "dry_run",
        "requested_by",
        "created_at",
        "started_at",
        "finished_at",
        "heartbeat_at",
        "attempts",
        "passes_done",
        "error",
        "summary_table",
    ]
    readonly_fields = ["summary_table"]

    def get_queryset(self, request):
        # The list shows only the match rate of the summary: not the whole JSON per row.
        return super().get_queryset(request).defer("summary").annotate(summary_match_rate=KT("summary__match_rate"))

    def get_object(self, request, object_id, from_field=None):
        # The change page renders the summary and names the job, tenant and requester: one query.
        if not str(object_id).isdigit():
            return None
        return Execution.objects.select_related("job", "tenant", "requested_by").filter(pk=object_id).first()

    def has_cancel_permission(self, request):
        return request.user.has_perm(ACT_IN_QUEUES)

    @admin.display(description="Match rate")
    def match_rate(self, obj: Execution):
        rate = getattr(obj, "summary_match_rate", None)
        return f"{float(rate) * 100:.1f} %" if rate not in (None, "") else "—"

    @admin.display(description="Summary")
    def summary_table(self, obj: Execution):
        return summary_table_html(obj.summary, job_id=obj.job_id, pass_order=obj.passes_done)

    @admin.action(description="Cancel selected executions (queued or running)", permissions=["cancel"])
    def cancel_selected(self, request, queryset):
        cancelled = 0
        for execution in queryset.order_by("pk")[:MAX_BULK]:
            try:
                services.execution_cancel(execution=execution, user=request.user)
                cancelled += 1
            except ReconciliationError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        self.message_user(request, f"{cancelled} execution(s) cancelled.")

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {**(extra_context or {}), **queue_links(request)})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        execution = Execution.objects.filter(pk=object_id).only("id", "job_id").first() if object_id.isdigit() else None
        links = queue_links(request, execution=object_id) if execution else {}
        if execution and links:
            links["exceptions_queue_url"] = f"{reverse('admin:reconciliation_exceptions_queue')}?job={execution.job_id}"
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **links})

    def get_urls(self):
        def view(route, function, name):
            return path(route, self.admin_site.admin_view(function), name=name)

        return [  # before the catch-all "<object_id>/"
            view("review/", ReviewQueueView(self), "reconciliation_review_queue"),
            view("exceptions/", ExceptionsQueueView(self), "reconciliation_exceptions_queue"),
            view("exceptions/<int:exception_id>/", ExceptionDetailView(self), "reconciliation_exception_detail"),
            *super().get_urls(),
        ]
