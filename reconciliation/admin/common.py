"""What the reconciliation admin modules share: permissions, limits, paginator, filters, widgets."""

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.widgets import ForeignKeyRawIdWidget
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.functional import cached_property

from project.admin import BigTableAdmin, EstimatedCountPaginator
from reconciliation.models import (
    Tenant,
)

VIEW_QUEUES = "reconciliation.view_execution"
ACT_IN_QUEUES = "reconciliation.change_execution"
RUN_JOBS = "reconciliation.add_execution"
MAX_BULK = 100  # one service call (one transaction) per item: bounded per POST
MAX_CANDIDATES = 50
MAX_RUN_JOBS = 20
FILTERED_COUNT_CAP = 10_000


class CappedCountPaginator(EstimatedCountPaginator):
    """Unfiltered: the table's estimate. Filtered: counted only up to FILTERED_COUNT_CAP.

    A filter does not keep these lists small: one job's records are millions, and counting them
    exactly took 0.7 s (2.3 s for its open ones) on a 2-million-record job; capped, 4 ms (89 ms
    for the open ones). Past the cap the page says "more than 10000"
    (templates/admin/reconciliation/pagination.html).
    """

    cap = FILTERED_COUNT_CAP
    capped = False

    @cached_property
    def count(self) -> int:
        if not self.object_list.query.where:
            return super().count
        # The list's own ordering stays in the LIMITed subquery: it walks the index the page
        # reads (a job's records by (job, side, external_id)); without it the planner chose a
        # merge anti-join over the whole primary key (0.8 s instead of 89 ms for open records).
        counted = self.object_list[: self.cap + 1].count()
        self.capped = counted > self.cap
        return min(counted, self.cap)


class ReconciliationBigTableAdmin(BigTableAdmin):
    paginator = CappedCountPaginator


def all_tenants():
    """The services' tenant scope for staff: every tenant (a subquery, not a list of ids)."""
    return Tenant.objects.values("pk")


class IdInputFilter(admin.SimpleListFilter):
    """A filter typed as an id (a box, not a list of every job or tenant)."""

    template = "admin/reconciliation/id_input_filter.html"
    column = ""

    def lookups(self, request, model_admin):
        return ()

    def has_output(self):
        return True

    def queryset(self, request, queryset):
        value = self.value()
        if value in (None, ""):
            return queryset
        try:
            return queryset.filter(**{self.column: int(value)})
        except ValueError:
            raise IncorrectLookupParameters(f"{self.parameter_name} must be a number") from None

    def choices(self, changelist):
        yield {
            "parameter_name": self.parameter_name,
            "value": self.value() or "",
            "others": [(name, value) for name, value in changelist.params.items() if name != self.parameter_name],
            "clear_url": changelist.get_query_string(remove=[self.parameter_name]),
        }


class JobIdFilter(IdInputFilter):
    title = "job id"
    parameter_name = "job"
    column = "job_id"


class TenantIdFilter(IdInputFilter):
    title = "tenant id"
    parameter_name = "tenant"
    column = "tenant_id"


class IdOnlyRawIdWidget(ForeignKeyRawIdWidget):
    """The raw-id input without its label: the stock widget looks the label up with one query per
    row; the inline shows the member from its select_related user instead."""

    def label_and_url_for_value(self, value):
        return "", ""


def queue_links(request, **params) -> dict:
    if not request.user.has_perm(VIEW_QUEUES):
        return {}
    query = "&".join(f"{name}={value}" for name, value in params.items())
    return {
        "review_queue_url": f"{reverse('admin:reconciliation_review_queue')}?{query}",
        "exceptions_queue_url": f"{reverse('admin:reconciliation_exceptions_queue')}?{query}",
    }


def summary_table_html(summary: dict, *, job_id: int | None = None, pass_order: list[str] = ()):
    """The summary JSON as tables: totals, per side, per pass, open exceptions by reason."""
    if not summary:
        return "No summary yet: it is written when the execution finishes."
    duration_ms = summary.get("duration_ms")
    totals = [
        ("Dry run (nothing written)", "yes" if summary.get("dry_run") else "no"),
        ("Match rate", f"{float(summary.get('match_rate', 0)) * 100:.2f} %"),
        ("Records", summary.get("records", "")),
        ("Matched records", summary.get("matched_records", "")),
        ("Open records", summary.get("open_records", "")),
        ("Matches: auto", summary.get("matches", {}).get("auto", "")),
        ("Matches: suggested", summary.get("matches", {}).get("suggested", "")),
        ("Duration", f"{duration_ms / 1000:.3f} s" if duration_ms is not None else ""),
    ]
    sides = [
        {"name": side, "records": 0, "matched": 0, "amount_matched": "0", "amount_open": "0"} | summary.get(side, {})
        for side in ("left", "right")
    ]
    # The order the passes ran in (JSONB keeps its own key order); a dry run records none.
    order = list(pass_order)
    passes = [
        {"name": name, "auto": 0, "suggested": 0, "records": 0, "candidates": 0, "duration_ms": 0} | figures
        for name, figures in sorted(
            summary.get("passes", {}).items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)
        )
    ]
    context = {
        "totals": totals,
        "sides": sides,
        "passes": passes,
        "reasons": sorted(summary.get("open_by_reason", {}).items()),
        "exceptions_url": reverse("admin:reconciliation_exceptions_queue"),
        "job_id": job_id,
    }
    return render_to_string("admin/reconciliation/execution/_summary.html", context)
