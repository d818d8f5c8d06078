"""Records, read-only: open or matched, searched by external id."""

from django.contrib import admin
from django.db.models import F

from reconciliation.admin.common import (
    JobIdFilter,
    ReconciliationBigTableAdmin,
    TenantIdFilter,
)
from reconciliation.models import (
    Record,
)


class RecordStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return Record.Status.choices

    def queryset(self, request, queryset):
        if self.value() == Record.Status.OPEN:
            return queryset.filter(matched__isnull=True)
        if self.value() == Record.Status.MATCHED:
            return queryset.filter(matched__isnull=False)
        return queryset


@admin.register(Record)
class RecordAdmin(ReconciliationBigTableAdmin):
    """Millions of rows: estimated count, no date hierarchy, search by exact external id (an index
    skip scan of the unique (job, side, external_id) index; PostgreSQL 18), filter by job id."""

    list_display = ["id", "external_id", "side", "amount", "currency", "booked_on", "reference", "job", "status"]
    list_filter = [JobIdFilter, TenantIdFilter, "side", RecordStatusFilter]
    list_select_related = ["job"]
    search_fields = ["=external_id"]
    search_help_text = "Exact external id (case-sensitive)."
    # The unique (job, side, external_id) index's order: a job's records without a sort.
    ordering = ["job", "side", "external_id"]
    show_facets = admin.ShowFacets.NEVER

    def get_queryset(self, request):
        return super().get_queryset(request).defer("raw", "description").annotate(match_id=F("matched__match_id"))

    def get_search_results(self, request, queryset, search_term):
        # The stock "=" is iexact (UPPER(...) = UPPER(...)), which no index serves.
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(external_id=term), False

    def get_fields(self, request, obj=None):
        return [field.name for field in Record._meta.fields] + ["status"]

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj)

    def get_object(self, request, object_id, from_field=None):
        # The change page shows raw and description; the list defers them.
        return (
            Record.objects.select_related("job", "tenant")
            .annotate(match_id=F("matched__match_id"))
            .filter(pk=object_id)
            .first()
            if str(object_id).isdigit()
            else None
        )

    @admin.display(description="Status")
    def status(self, obj: Record):
        if getattr(obj, "match_id", None) is None:
            return Record.Status.OPEN
        return f"{Record.Status.MATCHED} (match {obj.match_id})"

    def has_add_permission(self, request):
        return False  # records arrive through the ingest API

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
