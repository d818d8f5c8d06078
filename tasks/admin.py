from django.contrib import admin, messages

from project.admin import BigTableAdmin
from tasks import selectors, services
from tasks.models import Project, Task, TaskWebhookDelivery


@admin.register(Project)
class ProjectAdmin(BigTableAdmin):
    list_display = ["name", "owner", "created_at"]
    list_select_related = ["owner"]
    search_fields = ["name"]
    autocomplete_fields = ["owner"]
    date_hierarchy = "created_at"

    # Writes go through the services, which record ActivityLog in the same transaction.
    def save_model(self, request, obj, form, change):
        if change:
            data = {field: form.cleaned_data[field] for field in form.changed_data}
            services.project_update(
                project=Project.objects.get(pk=obj.pk), data=data, actor=request.user, request=request
            )
        else:
            created = services.project_create(name=obj.name, owner=obj.owner, actor=request.user, request=request)
            obj.pk = created.pk

    def delete_model(self, request, obj):
        services.project_delete(project=obj, actor=request.user, request=request)

    def delete_queryset(self, request, queryset):
        services.project_bulk_delete(
            project_ids=list(queryset.values_list("pk", flat=True)), actor=request.user, request=request
        )


def _bulk_status_action(status: str):
    def apply(modeladmin, request, queryset):
        ids = list(queryset.values_list("pk", flat=True)[: selectors.BATCH_MAX_IDS + 1])
        if len(ids) > selectors.BATCH_MAX_IDS:
            modeladmin.message_user(
                request, f"Select at most {selectors.BATCH_MAX_IDS} tasks at a time.", messages.ERROR
            )
            return
        updated = services.task_bulk_update(
            task_ids=ids, changes={"status": status}, actor=request.user, request=request
        )
        modeladmin.message_user(request, f"{updated} task(s) marked {Task.Status(status).label}.")

    apply.short_description = f"Mark selected tasks {Task.Status(status).label}"
    apply.__name__ = f"mark_{status}"
    apply.allowed_permissions = ("change",)
    return apply


@admin.register(Task)
class TaskAdmin(BigTableAdmin):
    list_display = ["title", "project", "assignee", "status", "priority", "deadline", "created_at"]
    list_filter = ["status", "priority"]
    list_select_related = ["project", "assignee"]
    # Queries are a few ms at 1M rows (estimated count, one page, date buckets by skip scan);
    # rendering is the cost, linear in rows: 50 rows halve it (Django's default is 100).
    list_per_page = 50
    autocomplete_fields = ["project", "assignee"]
    search_fields = ["title"]
    search_help_text = "Full-text search over title and description."
    date_hierarchy = "created_at"
    ordering = ["-created_at", "-id"]
    readonly_fields = ["created_at", "updated_at", "completed_at"]
    exclude = ["search_vector"]
    actions = [_bulk_status_action(status) for status in Task.Status.values]

    def get_queryset(self, request):
        return super().get_queryset(request).defer("search_vector")

    def changelist_view(self, request, extra_context=None):
        if not request.GET.get("q", "").strip():
            return super().changelist_view(request, extra_context)
        # The page's rows are read while the template renders: render inside the search plan.
        with selectors.task_search_plan():
            response = super().changelist_view(request, extra_context)
            if hasattr(response, "render"):
                response.render()
        return response

    def get_search_results(self, request, queryset, search_term):
        # Full-text over the GIN index instead of ILIKE '%term%', which scans every row.
        if not search_term.strip():
            return queryset, False
        return selectors.task_search(queryset, search_term), False

    def save_model(self, request, obj, form, change):
        data = {
            field: form.cleaned_data[field] for field in form.changed_data if field in services.TASK_FIELDS_EDITABLE
        }
        if change:
            # The form already changed obj; the service compares against the stored row.
            stored = Task.objects.get(pk=obj.pk)
            services.task_update(task=stored, data=data, actor=request.user, request=request)
        else:
            created = services.task_create(
                actor=request.user,
                request=request,
                **{
                    field: form.cleaned_data.get(field)
                    for field in services.TASK_FIELDS_EDITABLE
                    if field in form.cleaned_data
                },
            )
            obj.pk = created.pk

    def delete_model(self, request, obj):
        services.task_delete(task=obj, actor=request.user, request=request)

    def delete_queryset(self, request, queryset):
        services.task_bulk_delete(
            task_ids=list(queryset.values_list("pk", flat=True)), actor=request.user, request=request
        )


@admin.register(TaskWebhookDelivery)
class TaskWebhookDeliveryAdmin(BigTableAdmin):
    """Deliveries are written by the sender only; staff read them and redeliver dead or failed ones."""

    REDELIVER_MAX = 5000
    list_display = ["id", "event", "url", "status", "attempts", "last_status_code", "next_attempt_at", "created_at"]
    list_filter = ["status", "event"]
    search_fields = ["=id"]
    ordering = ["-id"]
    actions = ["redeliver_selected"]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in TaskWebhookDelivery._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_redeliver_permission(self, request):
        return request.user.has_perm("tasks.change_taskwebhookdelivery")

    @admin.action(description="Redeliver selected deliveries now", permissions=["redeliver"])
    def redeliver_selected(self, request, queryset):
        ids = list(queryset.values_list("pk", flat=True)[: self.REDELIVER_MAX + 1])
        if len(ids) > self.REDELIVER_MAX:
            self.message_user(request, f"Select at most {self.REDELIVER_MAX} deliveries at a time.", messages.ERROR)
            return
        count = services.task_webhook_redeliver(delivery_ids=ids, actor=request.user, request=request)
        self.message_user(request, f"{count} deliveries queued again.")
