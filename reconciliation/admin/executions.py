"""The reconciliation admin: tenants, jobs (run now, dry run), executions, the suggested-match review
queue, the exceptions queue with candidates and manual matching, records, delivery.

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
ActivityLog. Match and ReconciliationException are partitioned with a composite primary key, which Django 5.2's
admin cannot register: their queues are custom views (get_urls of ExecutionAdmin), keyset-paginated
(never a COUNT), listed in the admin index and sidebar next to the registered models.
"""

from datetime import timedelta
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import BadRequest, PermissionDenied
from django.db.models import F
from django.db.models.fields.json import KT
from django.db.models.functions import Abs
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from project.admin import url_with, url_without
from project.api.pagination import InvalidCursor, KeysetPaginator
from reconciliation.admin.common import (
    ACT_IN_QUEUES,
    MAX_BULK,
    MAX_CANDIDATES,
    QUEUE_ORDERING,
    QUEUE_PAGE_SIZE,
    VIEW_QUEUES,
    JobIdFilter,
    ReconciliationBigTableAdmin,
    TenantIdFilter,
    all_tenants,
    queue_links,
    summary_table_html,
)
from reconciliation.engine import services
from reconciliation.engine.rules import parse_rules
from reconciliation.errors import InvalidRules, ReconciliationError
from reconciliation.models import (
    ExceptionsQueue,
    Execution,
    Match,
    ReconciliationException,
    ReconciliationJob,
    Record,
    ReviewQueue,
)
from reconciliation.review import services as review_services
from reconciliation.workflow.ageing import BUCKET_NAMES, bucket_condition, bucket_of


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
        service = review_services.match_confirm if action == "confirm" else review_services.match_reject
        done = []
        for match_id in ids:
            try:
                service(match_id=match_id, tenant_ids=all_tenants(), user=request.user, note=note)
                done.append(match_id)
            except (ReconciliationError, Match.DoesNotExist) as exc:
                self.message_user(request, f"Match {match_id}: {exc}", messages.WARNING)
        if done:
            verb = "confirmed" if action == "confirm" else "rejected (its records are open exceptions again)"
            self.message_user(request, f"{len(done)} match(es) {verb}: {', '.join(map(str, done))}.")
        return HttpResponseRedirect(request.get_full_path())

    def exceptions_queue_view(self, request):
        """Open exceptions (resolved_at IS NULL), a tenant's oldest first, with their records."""
        if not request.user.has_perm(VIEW_QUEUES):
            raise PermissionDenied
        if request.method == "POST":
            return self._exceptions_post(request)
        filters = ExceptionFilterForm(request.GET)
        context = self._context(request, "Exceptions queue: unmatched records", filters=filters, rows=[])
        if not filters.is_valid():
            return TemplateResponse(request, "admin/reconciliation/exceptions_queue.html", context)
        data = filters.cleaned_data
        queryset = ReconciliationException.objects.filter(resolved_at__isnull=True)
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
        if data["age"]:
            queryset = queryset.filter(bucket_condition(data["age"]))
        if data["assignee"]:
            queryset = queryset.filter(assigned_to_id=data["assignee"])
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
                "age_bucket": bucket_of(exception.created_at),
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
                review_services.exception_resolve(
                    exception_id=unmatched_id, tenant_ids=all_tenants(), note=note, user=request.user
                )
                done.append(unmatched_id)
            except (ReconciliationError, ReconciliationException.DoesNotExist) as exc:
                self.message_user(request, f"Exception {unmatched_id}: {exc}", messages.WARNING)
        return done

    def exception_detail_view(self, request, unmatched_id: int):
        """One exception, its record, and the open records of the other side that could be its
        partner (same job and currency, amount within the job's drift, date within its window)."""
        if not request.user.has_perm(VIEW_QUEUES):
            raise PermissionDenied
        exception = ReconciliationException.objects.filter(id=unmatched_id).first()
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

    def _exception_detail_post(self, request, exception: ReconciliationException):
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
            match = review_services.match_manual(
                left_ids=left_ids, right_ids=right_ids, tenant_ids=all_tenants(), user=request.user, note=note
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


class _QueueFilterForm(forms.Form):
    tenant = forms.IntegerField(required=False, min_value=1)
    job = forms.IntegerField(required=False, min_value=1)
    execution = forms.IntegerField(required=False, min_value=1)


class ReviewFilterForm(_QueueFilterForm):
    pass_name = forms.ChoiceField(required=False, choices=[("", "any"), *Match.Pass.choices])
    confidence_min = forms.DecimalField(required=False, min_value=0, max_value=1, decimal_places=4)
    confidence_max = forms.DecimalField(required=False, min_value=0, max_value=1, decimal_places=4)


class ExceptionFilterForm(_QueueFilterForm):
    reason = forms.ChoiceField(required=False, choices=[("", "any"), *ReconciliationException.Reason.choices])
    side = forms.ChoiceField(required=False, choices=[("", "any"), *Record.Side.choices])
    amount_min = forms.DecimalField(required=False, max_digits=18, decimal_places=4)
    amount_max = forms.DecimalField(required=False, max_digits=18, decimal_places=4)
    # The exceptions workflow (issue 14).
    age = forms.ChoiceField(required=False, choices=[("", "any"), *((name, name) for name in BUCKET_NAMES)])
    assignee = forms.IntegerField(required=False, min_value=1, max_value=2**63 - 1, label="Assignee (user id)")


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
