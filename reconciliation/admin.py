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

Every write goes through `reconciliation.services` / `reconciliation.webhooks`, which audit it in
ActivityLog. Match and Unmatched are partitioned with a composite primary key, which Django 5.2's
admin cannot register: their queues are custom views (get_urls of ExecutionAdmin), keyset-paginated
(never a COUNT), listed in the admin index and sidebar next to the registered models.
"""

import json
from datetime import timedelta
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.widgets import ForeignKeyRawIdWidget
from django.core.exceptions import BadRequest, PermissionDenied
from django.db.models import F
from django.db.models.fields.json import KT
from django.db.models.functions import Abs
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join

from project.activity import activity_record
from project.admin import BigTableAdmin, EstimatedCountPaginator, url_with, url_without
from project.api.pagination import InvalidCursor, KeysetPaginator
from reconciliation import services, webhooks
from reconciliation.exceptions import InvalidRules, ReconciliationError
from reconciliation.models import (
    ExceptionsQueue,
    Execution,
    Match,
    ReconciliationJob,
    Record,
    ReviewQueue,
    Tenant,
    TenantMembership,
    Unmatched,
    WebhookDelivery,
    WebhookEndpoint,
)
from reconciliation.rules import parse_rules

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


def _all_tenants():
    """The services' tenant scope for staff: every tenant (a subquery, not a list of ids)."""
    return Tenant.objects.values("pk")


# --- Admin index and sidebar: the two queues listed with the app's models ----------------------


class _QueueEntryAdmin(admin.ModelAdmin):
    """Lists a queue in the admin index and sidebar (through a table-less model, as the
    monitoring cockpit does) for users who may view executions; its page is the queue view."""

    queue_url_name = ""

    def has_module_permission(self, request):
        return request.user.has_perm(VIEW_QUEUES)

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm(VIEW_QUEUES)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

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


# --- Filters -----------------------------------------------------------------------------------


class _IdInputFilter(admin.SimpleListFilter):
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


class JobIdFilter(_IdInputFilter):
    title = "job id"
    parameter_name = "job"
    column = "job_id"


class TenantIdFilter(_IdInputFilter):
    title = "tenant id"
    parameter_name = "tenant"
    column = "tenant_id"


# --- Tenants ------------------------------------------------------------------------------------


class _IdOnlyRawIdWidget(ForeignKeyRawIdWidget):
    """The raw-id input without its label: the stock widget looks the label up with one query per
    row; the inline shows the member from its select_related user instead."""

    def label_and_url_for_value(self, value):
        return "", ""


class TenantMembershipInline(admin.TabularInline):
    model = TenantMembership
    extra = 0
    fields = ["user", "member", "role", "created_at"]
    readonly_fields = ["member", "created_at"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user", "tenant")  # both in its __str__

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "user":
            kwargs["widget"] = _IdOnlyRawIdWidget(db_field.remote_field, self.admin_site)
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
            )


# --- Jobs ---------------------------------------------------------------------------------------


class PrettyJSONField(forms.JSONField):
    """Rules shown indented, for people to edit."""

    def prepare_value(self, value):
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, ensure_ascii=False, indent=2, cls=self.encoder)


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
        extra_context = {**(extra_context or {}), **_queue_links(request, job=object_id)}
        return super().change_view(request, object_id, form_url, extra_context)


def _queue_links(request, **params) -> dict:
    if not request.user.has_perm(VIEW_QUEUES):
        return {}
    query = "&".join(f"{name}={value}" for name, value in params.items())
    return {
        "review_queue_url": f"{reverse('admin:reconciliation_review_queue')}?{query}",
        "exceptions_queue_url": f"{reverse('admin:reconciliation_exceptions_queue')}?{query}",
    }


# --- Executions ---------------------------------------------------------------------------------


def _summary_table(summary: dict, *, job_id: int | None = None, pass_order: list[str] = ()):
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


@admin.register(Execution)
class ExecutionAdmin(ReconciliationBigTableAdmin):
    """Executions, read-only (they are written by the matcher); cancel is an action. Also hosts the
    review queue and the exceptions queue (get_urls)."""

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

    def has_add_permission(self, request):
        return False  # through the jobs' Run now / Dry run actions (services.execution_start)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_cancel_permission(self, request):
        return request.user.has_perm(ACT_IN_QUEUES)

    @admin.display(description="Match rate")
    def match_rate(self, obj: Execution):
        rate = getattr(obj, "summary_match_rate", None)
        return f"{float(rate) * 100:.1f} %" if rate not in (None, "") else "—"

    @admin.display(description="Summary")
    def summary_table(self, obj: Execution):
        return _summary_table(obj.summary, job_id=obj.job_id, pass_order=obj.passes_done)

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
        return super().changelist_view(request, {**(extra_context or {}), **_queue_links(request)})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        execution = Execution.objects.filter(pk=object_id).only("id", "job_id").first() if object_id.isdigit() else None
        links = _queue_links(request, execution=object_id) if execution else {}
        if execution and links:
            links["exceptions_queue_url"] = f"{reverse('admin:reconciliation_exceptions_queue')}?job={execution.job_id}"
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **links})

    def get_urls(self):
        def view(route, function, name):
            return path(route, self.admin_site.admin_view(function), name=name)

        return [  # before the catch-all "<object_id>/"
            view("review/", self.review_queue_view, "reconciliation_review_queue"),
            view("exceptions/", self.exceptions_queue_view, "reconciliation_exceptions_queue"),
            view("exceptions/<int:unmatched_id>/", self.exception_detail_view, "reconciliation_exception_detail"),
            *super().get_urls(),
        ]

    # --- the queues -----------------------------------------------------------------------------

    def _context(self, request, title: str, **context) -> dict:
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "can_act": request.user.has_perm(ACT_IN_QUEUES),
            "review_queue_url": reverse("admin:reconciliation_review_queue"),
            "exceptions_queue_url": reverse("admin:reconciliation_exceptions_queue"),
            **context,
        }

    def _keyset_page(self, request, queryset, context: dict):
        """Fill context["page"], older/newer links from ?cursor=; None when the cursor is bad."""
        # (tenant_id, id): the order of both queues' partial indexes (recon_match_review_idx,
        # recon_unm_open_idx), so a page is an index range scan, filtered by tenant or not.
        paginator = KeysetPaginator(queryset, QUEUE_ORDERING)
        cursor = request.GET.get("cursor")
        try:
            direction, position = paginator.decode_position(cursor) if cursor else ("n", None)
        except InvalidCursor:
            return None
        if direction == "n":
            page = paginator.page(first=QUEUE_PAGE_SIZE, after=position)
        else:
            page = paginator.page(last=QUEUE_PAGE_SIZE, before=position)
        rows = list(page)
        if rows and page.has_next:
            context["next_url"] = url_with(request, cursor=paginator.encode_position(rows[-1], "n"))
        if rows and page.has_previous:
            context["previous_url"] = url_with(request, cursor=paginator.encode_position(rows[0], "p"))
        if cursor:
            context["first_url"] = url_without(request, "cursor")
        return rows

    def review_queue_view(self, request):
        """Suggested matches, a tenant's oldest first, with both sides' records."""
        if not request.user.has_perm(VIEW_QUEUES):
            raise PermissionDenied
        if request.method == "POST":
            return self._review_post(request)
        filters = ReviewFilterForm(request.GET)
        context = self._context(request, "Review queue: suggested matches", filters=filters, rows=[])
        if not filters.is_valid():
            return TemplateResponse(request, "admin/reconciliation/review_queue.html", context)
        data = filters.cleaned_data
        queryset = Match.objects.filter(status=Match.Status.SUGGESTED)
        for name, column in (("tenant", "tenant_id"), ("job", "job_id"), ("execution", "execution_id")):
            if data[name]:
                queryset = queryset.filter(**{column: data[name]})
        if data["pass_name"]:
            queryset = queryset.filter(pass_name=data["pass_name"])
        if data["confidence_min"] is not None:
            queryset = queryset.filter(confidence__gte=data["confidence_min"])
        if data["confidence_max"] is not None:
            queryset = queryset.filter(confidence__lte=data["confidence_max"])
        matches = self._keyset_page(request, queryset, context)
        if matches is None:
            self.message_user(request, "That page link is not valid; showing the first page.", messages.WARNING)
            return HttpResponseRedirect(url_without(request, "cursor"))
        record_ids = {record_id for match in matches for record_id in (*match.left_ids, *match.right_ids)}
        records = _records_by_id(record_ids)
        jobs = _jobs_by_id({match.job_id for match in matches})
        context["rows"] = [
            {
                "match": match,
                "job": jobs.get(match.job_id),
                "left": [records[i] for i in match.left_ids if i in records],
                "right": [records[i] for i in match.right_ids if i in records],
                "difference": match.right_amount - match.left_amount,
            }
            for match in matches
        ]
        return TemplateResponse(request, "admin/reconciliation/review_queue.html", context)

    def _review_post(self, request):
        if not request.user.has_perm(ACT_IN_QUEUES):
            raise PermissionDenied
        action, ids, note = _posted_action(request, allowed=("confirm", "reject"))
        if action == "reject" and not note:
            self.message_user(request, "Say why in the note: a rejection needs one.", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
        service = services.match_confirm if action == "confirm" else services.match_reject
        done = []
        for match_id in ids:
            try:
                service(match_id=match_id, tenant_ids=_all_tenants(), user=request.user, note=note)
                done.append(match_id)
            except (ReconciliationError, Match.DoesNotExist) as exc:
                self.message_user(request, f"Match {match_id}: {exc}", messages.WARNING)
        if done:
            verb = "confirmed" if action == "confirm" else "rejected (its records are open exceptions again)"
            self.message_user(request, f"{len(done)} match(es) {verb}: {', '.join(map(str, done))}.")
        return HttpResponseRedirect(request.get_full_path())

    def exceptions_queue_view(self, request):
        """Open exceptions (Unmatched, resolved_at IS NULL), a tenant's oldest first, with their records."""
        if not request.user.has_perm(VIEW_QUEUES):
            raise PermissionDenied
        if request.method == "POST":
            return self._exceptions_post(request)
        filters = ExceptionFilterForm(request.GET)
        context = self._context(request, "Exceptions queue: unmatched records", filters=filters, rows=[])
        if not filters.is_valid():
            return TemplateResponse(request, "admin/reconciliation/exceptions_queue.html", context)
        data = filters.cleaned_data
        queryset = Unmatched.objects.filter(resolved_at__isnull=True)
        for name, column in (("tenant", "tenant_id"), ("job", "job_id"), ("execution", "execution_id")):
            if data[name]:
                queryset = queryset.filter(**{column: data[name]})
        for name in ("reason", "side"):
            if data[name]:
                queryset = queryset.filter(**{name: data[name]})
        if data["amount_min"] is not None:
            queryset = queryset.filter(amount__gte=data["amount_min"])
        if data["amount_max"] is not None:
            queryset = queryset.filter(amount__lte=data["amount_max"])
        exceptions = self._keyset_page(request, queryset, context)
        if exceptions is None:
            self.message_user(request, "That page link is not valid; showing the first page.", messages.WARNING)
            return HttpResponseRedirect(url_without(request, "cursor"))
        records = _records_by_id({exception.record_id for exception in exceptions})
        jobs = _jobs_by_id({exception.job_id for exception in exceptions})
        context["rows"] = [
            {
                "exception": exception,
                "record": records.get(exception.record_id),
                "job": jobs.get(exception.job_id),
                "detail_url": reverse("admin:reconciliation_exception_detail", args=[exception.id]),
            }
            for exception in exceptions
        ]
        return TemplateResponse(request, "admin/reconciliation/exceptions_queue.html", context)

    def _exceptions_post(self, request):
        if not request.user.has_perm(ACT_IN_QUEUES):
            raise PermissionDenied
        _action, ids, note = _posted_action(request, allowed=("resolve",))
        if not note:
            self.message_user(request, "A resolution note is required.", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
        done = self._resolve(request, ids, note)
        if done:
            self.message_user(request, f"{len(done)} exception(s) resolved: {', '.join(map(str, done))}.")
        return HttpResponseRedirect(request.get_full_path())

    def _resolve(self, request, ids, note: str) -> list[int]:
        done = []
        for unmatched_id in ids:
            try:
                services.unmatched_resolve(
                    unmatched_id=unmatched_id, tenant_ids=_all_tenants(), note=note, user=request.user
                )
                done.append(unmatched_id)
            except (ReconciliationError, Unmatched.DoesNotExist) as exc:
                self.message_user(request, f"Exception {unmatched_id}: {exc}", messages.WARNING)
        return done

    def exception_detail_view(self, request, unmatched_id: int):
        """One exception, its record, and the open records of the other side that could be its
        partner (same job and currency, amount within the job's drift, date within its window)."""
        if not request.user.has_perm(VIEW_QUEUES):
            raise PermissionDenied
        exception = Unmatched.objects.filter(id=unmatched_id).first()
        if exception is None:
            raise Http404(f"No exception {unmatched_id}.")
        if request.method == "POST":
            return self._exception_detail_post(request, exception)
        record = Record.objects.select_related("job", "tenant").defer("raw").filter(pk=exception.record_id).first()
        context = self._context(
            request,
            f"Exception {exception.id}",
            exception=exception,
            record=record,
            candidates=[],
            queue_url=f"{reverse('admin:reconciliation_exceptions_queue')}?job={exception.job_id}",
        )
        if record is not None:
            try:
                rules = parse_rules(record.job.rules)
            except InvalidRules as exc:
                context["rules_error"] = str(exc)
            else:
                drift, candidates = _candidates(record, rules)
                context.update(
                    candidates=candidates,
                    drift=drift,
                    date_window_days=rules.date_window_days,
                    record_matched=_is_matched(record.pk),
                )
        return TemplateResponse(request, "admin/reconciliation/exception_detail.html", context)

    def _exception_detail_post(self, request, exception: Unmatched):
        if not request.user.has_perm(ACT_IN_QUEUES):
            raise PermissionDenied
        note = request.POST.get("note", "").strip()
        if "resolve" in request.POST:
            if not note:
                self.message_user(request, "A resolution note is required.", messages.ERROR)
                return HttpResponseRedirect(request.get_full_path())
            if self._resolve(request, [exception.id], note):
                self.message_user(request, f"Exception {exception.id} resolved.")
            return HttpResponseRedirect(request.get_full_path())
        try:
            candidate_id = int(request.POST.get("match_with", ""))
        except ValueError:
            self.message_user(request, "Choose a candidate record to match with.", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
        mine, theirs = [exception.record_id], [candidate_id]
        left_ids, right_ids = (mine, theirs) if exception.side == Record.Side.LEFT else (theirs, mine)
        try:
            match = services.match_manual(
                left_ids=left_ids, right_ids=right_ids, tenant_ids=_all_tenants(), user=request.user, note=note
            )
        except (ReconciliationError, Record.DoesNotExist) as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
        self.message_user(
            request,
            f"Matched by hand: match {match.id} (records {left_ids[0]} and {right_ids[0]}); "
            "their open exceptions are resolved.",
        )
        return HttpResponseRedirect(f"{reverse('admin:reconciliation_exceptions_queue')}?job={exception.job_id}")


# --- Queue helpers (reads) ----------------------------------------------------------------------


class _QueueFilterForm(forms.Form):
    tenant = forms.IntegerField(required=False, min_value=1)
    job = forms.IntegerField(required=False, min_value=1)
    execution = forms.IntegerField(required=False, min_value=1)


class ReviewFilterForm(_QueueFilterForm):
    pass_name = forms.ChoiceField(required=False, choices=[("", "any"), *Match.Pass.choices])
    confidence_min = forms.DecimalField(required=False, min_value=0, max_value=1, decimal_places=4)
    confidence_max = forms.DecimalField(required=False, min_value=0, max_value=1, decimal_places=4)


class ExceptionFilterForm(_QueueFilterForm):
    reason = forms.ChoiceField(required=False, choices=[("", "any"), *Unmatched.Reason.choices])
    side = forms.ChoiceField(required=False, choices=[("", "any"), *Record.Side.choices])
    amount_min = forms.DecimalField(required=False, max_digits=18, decimal_places=4)
    amount_max = forms.DecimalField(required=False, max_digits=18, decimal_places=4)


RECORD_COLUMNS = ("id", "external_id", "side", "amount", "currency", "booked_on", "reference", "counterparty")


def _records_by_id(ids) -> dict[int, Record]:
    if not ids:
        return {}
    return {record.pk: record for record in Record.objects.filter(pk__in=sorted(ids)).only(*RECORD_COLUMNS)}


def _jobs_by_id(ids) -> dict[int, ReconciliationJob]:
    if not ids:
        return {}
    return {
        job.pk: job
        for job in ReconciliationJob.objects.filter(pk__in=sorted(ids))
        .select_related("tenant")
        .only("id", "name", "tenant_id", "tenant__name")
    }


def _is_matched(record_id: int) -> bool:
    return Record.objects.filter(pk=record_id, matched__isnull=False).exists()


def candidate_queryset(record: Record, rules):
    """Open records of the other side within the job's amount drift and date window, closest
    amount first, and the drift: an index range scan of recon_record_candidate_idx (job, side,
    currency, amount), the open check an anti-join on MatchedRecord's primary key."""
    drift = rules.tolerance.drift(record.amount)
    window = timedelta(days=rules.date_window_days)
    other = Record.Side.RIGHT if record.side == Record.Side.LEFT else Record.Side.LEFT
    queryset = (
        Record.objects.filter(
            job_id=record.job_id,
            side=other,
            currency=record.currency,
            amount__gte=record.amount - drift,
            amount__lte=record.amount + drift,
            booked_on__gte=record.booked_on - window,
            booked_on__lte=record.booked_on + window,
            matched__isnull=True,
        )
        .only(*RECORD_COLUMNS)
        .alias(distance=Abs(F("amount") - record.amount))
        .order_by("distance", "id")[:MAX_CANDIDATES]
    )
    return drift, queryset


def _candidates(record: Record, rules) -> tuple[Decimal, list[Record]]:
    drift, queryset = candidate_queryset(record, rules)
    candidates = list(queryset)  # one query
    for candidate in candidates:
        candidate.difference = candidate.amount - record.amount
        candidate.days_apart = (candidate.booked_on - record.booked_on).days
    return drift, candidates


def _posted_action(request, *, allowed: tuple[str, ...]) -> tuple[str, list[int], str]:
    """A queue POST: either one row's button (`row` = "<action>:<id>", note in `note-<id>`) or a
    bulk button (`bulk` = action, ids ticked in `ids`, the shared `note`)."""
    row = request.POST.get("row", "")
    if row:
        action, _, raw_id = row.partition(":")
        ids = [raw_id]
        note = request.POST.get(f"note-{raw_id}", "") or request.POST.get("note", "")
    else:
        action = request.POST.get("bulk", "")
        ids = request.POST.getlist("ids")
        note = request.POST.get("note", "")
    if action not in allowed:
        raise BadRequest(f"Unknown action {action!r}.")
    try:
        parsed = sorted({int(value) for value in ids})
    except ValueError:
        raise BadRequest("Malformed ids.") from None
    if not parsed:
        messages.warning(request, "Tick at least one row first.")
    if len(parsed) > MAX_BULK:
        messages.error(request, f"At most {MAX_BULK} at a time; nothing was done.")
        parsed = []
    return action, parsed, note.strip()


# --- Records ------------------------------------------------------------------------------------


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


# --- Webhooks -----------------------------------------------------------------------------------


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
    """Endpoints are created and changed through reconciliation.webhooks (URL checked, audited).
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
