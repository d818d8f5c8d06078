"""What the reconciliation admin modules share: permissions, limits, paginator, filters, widgets."""

import json

from django import forms
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.widgets import ForeignKeyRawIdWidget
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join

from project.admin import BigTableAdmin, EstimatedCountPaginator
from reconciliation.models import (
    Tenant,
)

VIEW_QUEUES = "reconciliation.view_execution"


ACT_IN_QUEUES = "reconciliation.change_execution"


RUN_JOBS = "reconciliation.add_execution"


QUEUE_PAGE_SIZE = 50


QUEUE_ORDERING = ("tenant_id", "id")  # a tenant's oldest first


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


class PrettyJSONField(forms.JSONField):
    """Rules shown indented, for people to edit."""

    def prepare_value(self, value):
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, ensure_ascii=False, indent=2, cls=self.encoder)


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
    totals = [
        ("Dry run (nothing written)", "yes" if summary.get("dry_run") else "no"),
        ("Match rate", f"{float(summary.get('match_rate', 0)) * 100:.2f} %"),
        ("Records", summary.get("records", "")),
        ("Matched records", summary.get("matched_records", "")),
        ("Open records", summary.get("open_records", "")),
        ("Matches: auto", summary.get("matches", {}).get("auto", "")),
        ("Matches: suggested", summary.get("matches", {}).get("suggested", "")),
        ("Duration", f"{summary['duration_ms'] / 1000:.3f} s" if summary.get("duration_ms") is not None else ""),
    ]
    totals_html = format_html_join("", "<tr><th scope='row'>{}</th><td>{}</td></tr>", totals)
    sides = format_html_join(
        "",
        "<tr><th scope='row'>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (
                side,
                summary.get(side, {}).get("records", 0),
                summary.get(side, {}).get("matched", 0),
                summary.get(side, {}).get("amount_matched", "0"),
                summary.get(side, {}).get("amount_open", "0"),
            )
            for side in ("left", "right")
        ),
    )
    passes = format_html_join(
        "",
        "<tr><th scope='row'>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (
                name,
                figures.get("auto", 0),
                figures.get("suggested", 0),
                figures.get("records", 0),
                figures.get("candidates", 0),
                f"{figures.get('duration_ms', 0)} ms",
            )
            for name, figures in sorted(
                summary.get("passes", {}).items(),
                # The order they ran in (JSONB keeps its own key order); a dry run records none.
                key=lambda item: list(pass_order).index(item[0]) if item[0] in pass_order else len(pass_order),
            )
        ),
    )
    reasons = summary.get("open_by_reason", {})
    exceptions_url = reverse("admin:reconciliation_exceptions_queue")
    reasons_html = format_html_join(
        "",
        "<tr><th scope='row'><a href='{}?job={}&amp;reason={}'>{}</a></th><td>{}</td></tr>",
        ((exceptions_url, job_id, reason, reason, count) for reason, count in sorted(reasons.items())),
    ) or format_html("<tr><td colspan='2'>none</td></tr>")
    return format_html(
        "<div class='recon-summary'>"
        "<table><tbody>{}</tbody></table>"
        "<h4>Per side</h4><table><thead><tr><th>Side</th><th>Records</th><th>Matched</th>"
        "<th>Amount matched</th><th>Amount open</th></tr></thead><tbody>{}</tbody></table>"
        "<h4>Per pass</h4><table><thead><tr><th>Pass</th><th>Auto</th><th>Suggested</th>"
        "<th>Records matched</th><th>Candidates</th><th>Duration</th></tr></thead><tbody>{}</tbody></table>"
        "<h4>Open exceptions by reason</h4><table><tbody>{}</tbody></table>"
        "</div>",
        totals_html,
        sides,
        passes or format_html("<tr><td colspan='6'>no pass ran</td></tr>"),
        reasons_html,
    )
