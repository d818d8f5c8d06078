"""The review queue and the exceptions queue: one keyset-paginated queue view class over the
review selectors, and an exception's page with its candidates.

Match and ReconciliationException are partitioned with a composite primary key, which Django
5.2's admin cannot register: the queues are views of ExecutionAdmin (its get_urls), listed in the
admin index through table-less models. A page is read in (tenant_id, id) order, never counted.
Templates: reconciliation/templates/admin/reconciliation/ (review_queue, exceptions_queue,
exception_detail, sharing _queue_base, _filters, _pager, _record).
"""

from django import forms
from django.contrib import messages
from django.core.exceptions import BadRequest, PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from project.admin import url_with, url_without
from project.api.pagination import InvalidCursor, KeysetPaginator
from reconciliation.admin.common import ACT_IN_QUEUES, MAX_BULK, MAX_CANDIDATES, VIEW_QUEUES, all_tenants
from reconciliation.engine.rules import parse_rules
from reconciliation.errors import InvalidRules, ReconciliationError
from reconciliation.models import Match, ReconciliationException, Record
from reconciliation.review import selectors
from reconciliation.review import services as review_services
from reconciliation.workflow.ageing import BUCKET_NAMES, bucket_of

QUEUE_PAGE_SIZE = 50


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
    # The exceptions workflow (issue 14): age bucket and assignee.
    age = forms.ChoiceField(required=False, choices=[("", "any"), *((name, name) for name in BUCKET_NAMES)])
    assignee = forms.IntegerField(required=False, min_value=1, max_value=2**63 - 1, label="Assignee (user id)")


class _QueuePage:
    """What every queue page shares: the permission to look, its context, messages."""

    def __init__(self, model_admin):
        self.model_admin = model_admin

    def check_can_view(self, request) -> None:
        if not request.user.has_perm(VIEW_QUEUES):
            raise PermissionDenied

    def check_can_act(self, request) -> None:
        if not request.user.has_perm(ACT_IN_QUEUES):
            raise PermissionDenied

    def context(self, request, title: str, **context) -> dict:
        return {
            **self.model_admin.admin_site.each_context(request),
            "opts": self.model_admin.opts,
            "title": title,
            "can_act": request.user.has_perm(ACT_IN_QUEUES),
            "review_queue_url": reverse("admin:reconciliation_review_queue"),
            "exceptions_queue_url": reverse("admin:reconciliation_exceptions_queue"),
            **context,
        }

    def say(self, request, message: str, level=messages.INFO) -> None:
        self.model_admin.message_user(request, message, level)

    def back(self, request) -> HttpResponseRedirect:
        return HttpResponseRedirect(request.get_full_path())


class QueueView(_QueuePage):
    """One queue: GET filters (a form) → the selector's rows, a page of QUEUE_PAGE_SIZE by keyset
    → `rows()` for the template; POST → `act()` on one row's button or the ticked rows."""

    title = ""
    template = ""
    filter_form: type[forms.Form] = _QueueFilterForm
    actions: tuple[str, ...] = ()

    def queryset(self, filters: dict) -> QuerySet:
        raise NotImplementedError

    def rows(self, items: list) -> list[dict]:
        raise NotImplementedError

    def act(self, request, action: str, ids: list[int], note: str) -> None:
        raise NotImplementedError

    def __call__(self, request):
        self.check_can_view(request)
        if request.method == "POST":
            self.check_can_act(request)
            action, ids, note = _posted_action(request, allowed=self.actions)
            self.act(request, action, ids, note)
            return self.back(request)
        filters = self.filter_form(request.GET)
        context = self.context(request, self.title, filters=filters, rows=[])
        if filters.is_valid():
            items = _keyset_page(request, self.queryset(filters.cleaned_data), context)
            if items is None:
                self.say(request, "That page link is not valid; showing the first page.", messages.WARNING)
                return HttpResponseRedirect(url_without(request, "cursor"))
            context["rows"] = self.rows(items)
        return TemplateResponse(request, self.template, context)


class ReviewQueueView(QueueView):
    """Suggested matches, a tenant's oldest first, with both sides' records."""

    title = "Review queue: suggested matches"
    template = "admin/reconciliation/review_queue.html"
    filter_form = ReviewFilterForm
    actions = ("confirm", "reject")

    def queryset(self, filters: dict) -> QuerySet:
        return selectors.review_queue(**filters)

    def rows(self, matches: list[Match]) -> list[dict]:
        records = selectors.records_by_id({i for match in matches for i in (*match.left_ids, *match.right_ids)})
        jobs = selectors.jobs_by_id({match.job_id for match in matches})
        return [
            {
                "match": match,
                "job": jobs.get(match.job_id),
                "left": [records[i] for i in match.left_ids if i in records],
                "right": [records[i] for i in match.right_ids if i in records],
                "difference": match.right_amount - match.left_amount,
            }
            for match in matches
        ]

    def act(self, request, action: str, ids: list[int], note: str) -> None:
        if action == "reject" and not note:
            self.say(request, "Say why in the note: a rejection needs one.", messages.ERROR)
            return
        service = review_services.match_confirm if action == "confirm" else review_services.match_reject
        done = []
        for match_id in ids:
            try:
                service(match_id=match_id, tenant_ids=all_tenants(), user=request.user, note=note)
                done.append(match_id)
            except (ReconciliationError, Match.DoesNotExist) as exc:
                self.say(request, f"Match {match_id}: {exc}", messages.WARNING)
        if done:
            verb = "confirmed" if action == "confirm" else "rejected (its records are open exceptions again)"
            self.say(request, f"{len(done)} match(es) {verb}: {', '.join(map(str, done))}.")


class ExceptionsQueueView(QueueView):
    """Open exceptions (resolved_at IS NULL), a tenant's oldest first, with their records."""

    title = "Exceptions queue: unmatched records"
    template = "admin/reconciliation/exceptions_queue.html"
    filter_form = ExceptionFilterForm
    actions = ("resolve",)

    def queryset(self, filters: dict) -> QuerySet:
        return selectors.exceptions_queue(**filters)

    def rows(self, exceptions: list[ReconciliationException]) -> list[dict]:
        records = selectors.records_by_id({exception.record_id for exception in exceptions})
        jobs = selectors.jobs_by_id({exception.job_id for exception in exceptions})
        return [
            {
                "exception": exception,
                "record": records.get(exception.record_id),
                "job": jobs.get(exception.job_id),
                "detail_url": reverse("admin:reconciliation_exception_detail", args=[exception.id]),
                "age_bucket": bucket_of(exception.created_at),
            }
            for exception in exceptions
        ]

    def act(self, request, action: str, ids: list[int], note: str) -> None:
        if not note:
            self.say(request, "A resolution note is required.", messages.ERROR)
            return
        done = resolve_exceptions(self, request, ids, note)
        if done:
            self.say(request, f"{len(done)} exception(s) resolved: {', '.join(map(str, done))}.")


def resolve_exceptions(page: _QueuePage, request, ids: list[int], note: str) -> list[int]:
    done = []
    for exception_id in ids:
        try:
            review_services.exception_resolve(
                exception_id=exception_id, tenant_ids=all_tenants(), note=note, user=request.user
            )
            done.append(exception_id)
        except (ReconciliationError, ReconciliationException.DoesNotExist) as exc:
            page.say(request, f"Exception {exception_id}: {exc}", messages.WARNING)
    return done


class ExceptionDetailView(_QueuePage):
    """One exception, its record, and the open records of the other side that could be its
    partner (same job and currency, amount within the job's drift, date within its window)."""

    template = "admin/reconciliation/exception_detail.html"

    def __call__(self, request, exception_id: int):
        self.check_can_view(request)
        exception = ReconciliationException.objects.filter(id=exception_id).first()
        if exception is None:
            raise Http404(f"No exception {exception_id}.")
        if request.method == "POST":
            self.check_can_act(request)
            return self.post(request, exception)
        record = selectors.exception_record(exception)
        context = self.context(
            request,
            f"Exception {exception.id}",
            exception=exception,
            record=record,
            candidates=[],
            queue_url=_exceptions_of_job(exception.job_id),
        )
        if record is not None:
            context.update(self.candidates(record))
        return TemplateResponse(request, self.template, context)

    def candidates(self, record: Record) -> dict:
        try:
            rules = parse_rules(record.job.rules)
        except InvalidRules as exc:
            return {"rules_error": str(exc)}
        drift, queryset = selectors.exception_candidates(record, rules, limit=MAX_CANDIDATES)
        candidates = _with_differences(record, list(queryset))
        return {
            "candidates": candidates,
            "drift": drift,
            "date_window_days": rules.date_window_days,
            "record_matched": selectors.record_is_matched(record.pk),
        }

    def post(self, request, exception: ReconciliationException):
        note = request.POST.get("note", "").strip()
        if "resolve" in request.POST:
            if not note:
                self.say(request, "A resolution note is required.", messages.ERROR)
            elif resolve_exceptions(self, request, [exception.id], note):
                self.say(request, f"Exception {exception.id} resolved.")
            return self.back(request)
        try:
            candidate_id = int(request.POST.get("match_with", ""))
        except ValueError:
            self.say(request, "Choose a candidate record to match with.", messages.ERROR)
            return self.back(request)
        mine, theirs = [exception.record_id], [candidate_id]
        left_ids, right_ids = (mine, theirs) if exception.side == Record.Side.LEFT else (theirs, mine)
        try:
            match = review_services.match_manual(
                left_ids=left_ids, right_ids=right_ids, tenant_ids=all_tenants(), user=request.user, note=note
            )
        except (ReconciliationError, Record.DoesNotExist) as exc:
            self.say(request, str(exc), messages.ERROR)
            return self.back(request)
        self.say(
            request,
            f"Matched by hand: match {match.id} (records {left_ids[0]} and {right_ids[0]}); "
            "their open exceptions are resolved.",
        )
        return HttpResponseRedirect(_exceptions_of_job(exception.job_id))


def _exceptions_of_job(job_id: int) -> str:
    return f"{reverse('admin:reconciliation_exceptions_queue')}?job={job_id}"


def _with_differences(record: Record, candidates: list[Record]) -> list[Record]:
    for candidate in candidates:
        candidate.difference = candidate.amount - record.amount
        candidate.days_apart = (candidate.booked_on - record.booked_on).days
    return candidates


def _keyset_page(request, queryset, context: dict) -> list | None:
    """A page of the queue from ?cursor= (older/newer links into context); None for a bad cursor."""
    paginator = KeysetPaginator(queryset, selectors.QUEUE_ORDERING)
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
