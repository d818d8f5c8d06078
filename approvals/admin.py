import difflib

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import mark_safe

from approvals import admin_notifications, backtest, jobs, policy, rules, selectors, services
from approvals.exceptions import ApprovalError
from approvals.models import ApprovalRule, Atom, AuthorProfile, AutomationAuditLog, EntityType, Topic, Version
from approvals.policy import PolicyRule
from project.admin import BigTableAdmin, url_with, url_without
from project.admin_widgets import PrettyJSONField, ReadOnlyAdminMixin
from project.api.pagination import InvalidCursor, KeysetPaginator

RULE_PREVIEW_MAX_VERSIONS = 10_000  # what the API's preview evaluates, so both agree
AUDIT_LOG_PAGE_SIZE = 100
AUDIT_LOG_ORDERING = ("-created_at", "-id")  # served by audit_created_desc_idx
# difflib's line matching is quadratic: past this many lines the page would take seconds.
DIFF_MAX_LINES = 2_000
AUDIT_PERMISSION = "approvals.view_automationauditlog"
# Registered where they are defined: notification subscriptions and digests.
__all__ = ["admin_notifications"]


def _decide_action(approve: bool):
    verb = "approve" if approve else "reject"

    def decide(modeladmin, request, queryset):
        ids = list(queryset.values_list("pk", flat=True)[:501])
        if len(ids) > 500:
            modeladmin.message_user(request, "Select at most 500 versions at a time.", messages.ERROR)
            return
        try:
            decision = services.versions_decide(version_ids=ids, approve=approve, user=request.user, request=request)
        except ApprovalError as exc:
            modeladmin.message_user(request, str(exc), messages.ERROR)
            return
        text = f"{len(decision.decided)} version(s) {verb}d."
        if decision.already_decided:
            text += f" {len(decision.already_decided)} were already decided and left as they were."
        modeladmin.message_user(request, text)

    decide.__name__ = f"{verb}_selected"
    decide.short_description = f"{verb.capitalize()} selected versions"
    decide.allowed_permissions = ("decide",)
    return decide


def _side_by_side(before: str, after: str, *, before_label: str, after_label: str, context: bool) -> str:
    """difflib's side-by-side table. difflib escapes the lines itself, not the column labels."""
    before_lines, after_lines = before.splitlines(), after.splitlines()
    truncated = len(before_lines) > DIFF_MAX_LINES or len(after_lines) > DIFF_MAX_LINES
    table = difflib.HtmlDiff(wrapcolumn=70).make_table(
        before_lines[:DIFF_MAX_LINES],
        after_lines[:DIFF_MAX_LINES],
        escape(before_label),
        escape(after_label),
        context=context,
        numlines=3,
    )
    note = format_html("<p class='help'>Only the first {} lines are compared.</p>", DIFF_MAX_LINES) if truncated else ""
    return format_html("{}{}", mark_safe(table), note)  # noqa: S308 (difflib escaped the text)


@admin.register(Version)
class VersionAdmin(ReadOnlyAdminMixin, BigTableAdmin):
    # Read-only: proposals come through the API, decisions are actions, content changes only through
    # new versions, and no version is deleted (decided ones are the history reverts and audits read).
    list_display = [
        "id",
        "title",
        "entity_type",
        "entity_id",
        "author",
        "status",
        "decided_by",
        "decided_by_rule",
        "created_at",
    ]
    # Created date as a range filter, not a date hierarchy: versions have no created_at index (every
    # decision would pay for it), and newest first is the primary key's order.
    list_filter = ["status", "entity_type", "created_at"]
    list_select_related = ["author", "decided_by", "decided_by_rule"]
    # As the task changelist: rendering is the cost, linear in rows (41 ms of CPU for 100 rows
    # at 1M versions, bench/profile_requests.py); a reviewer works the queue 50 at a time.
    list_per_page = 50
    # A version's content can be 100,000 characters: the list shows titles.
    changelist_defer = ("content", "replaced_content")
    search_fields = ["=id", "=entity_id"]
    search_help_text = "Version id or entity id."
    ordering = ["-id"]
    actions = [_decide_action(True), _decide_action(False), "revert_selected"]
    fieldsets = [
        (None, {"fields": ["entity_type", "entity_id", "title", "content", "tags", "author", "status", "created_at"]}),
        ("Against the current entity", {"fields": ["entity_diff"]}),
        (
            "Decision",
            {
                "fields": [
                    "approved",
                    "decided_by",
                    "decided_by_rule",
                    "decision_reason",
                    "decided_at",
                    "reverted_by",
                    "reverted_at",
                    "replaced_title",
                    "replaced_content",
                ]
            },
        ),
    ]
    # Versions are never changed here (has_change_permission), so Django shows every field of the
    # fieldsets read-only by itself; only the computed diff needs declaring.
    readonly_fields = ["entity_diff"]

    def has_decide_permission(self, request):
        return request.user.has_perm("approvals.decide_version")

    @admin.display(description="Diff")
    def entity_diff(self, obj: Version):
        entity = services.ENTITY_MODELS[obj.entity_type].objects.filter(pk=obj.entity_id).only("title", "body").first()
        if entity is None:
            return f"{obj.entity_type} {obj.entity_id} no longer exists."
        current = f"Current {obj.entity_type} {obj.entity_id}"
        return format_html(
            "<div class='version-diff'><h4>Title</h4>{}<h4>Content</h4>{}</div>",
            _side_by_side(entity.title, obj.title, before_label=current, after_label="This version", context=False),
            _side_by_side(entity.body, obj.content, before_label=current, after_label="This version", context=True),
        )

    @admin.action(description="Revert selected decisions", permissions=["decide"])
    def revert_selected(self, request, queryset):
        # One service call per version, at most 100: whether an entity gets its old content back
        # depends on that version alone (a newer one may have been applied since).
        reverted = 0
        for version_id in queryset.values_list("pk", flat=True)[:100]:
            try:
                services.version_revert(version_id=version_id, user=request.user, request=request)
                reverted += 1
            except ApprovalError as exc:
                self.message_user(request, f"Version {version_id}: {exc}", messages.WARNING)
        self.message_user(request, f"{reverted} decision(s) reverted.")


class ApprovalRuleForm(forms.ModelForm):
    conditions = PrettyJSONField(
        key_order=("all", "any", "not", "field", "op", "value"),  # as people write a rule
        widget=forms.Textarea(
            attrs={"rows": 16, "cols": 80, "spellcheck": "false", "style": "font-family: monospace; width: 40em"}
        ),
        help_text="A JSON tree of all / any / not over comparisons of field, op and value; "
        "the language and its fields are described in docs/approvals-rules.md.",
    )

    class Meta:
        model = ApprovalRule
        fields = [
            "name",
            "is_active",
            "mode",
            "priority",
            "action",
            "scope_entity_type",
            "scope_tags",
            "conditions",
        ]

    def clean(self):
        cleaned = super().clean()
        try:
            policy.validate_scope(
                entity_type=cleaned.get("scope_entity_type") or "", tags=cleaned.get("scope_tags") or []
            )
        except rules.RuleInvalid as exc:
            self.add_error(exc.path if exc.path in self.fields else None, exc.message)
        return cleaned

    def clean_conditions(self):
        conditions = self.cleaned_data["conditions"]
        try:
            rules.validate_conditions(conditions)
        except rules.RuleInvalid as exc:
            raise forms.ValidationError(f"{exc.path}: {exc.message}") from None
        return conditions


class AuditLogFilterForm(forms.Form):
    rule = forms.IntegerField(required=False, min_value=1)
    decision = forms.ChoiceField(
        required=False, choices=[("", "any"), ("approved", "approved"), ("rejected", "rejected")]
    )
    version = forms.IntegerField(required=False, min_value=1)


@admin.register(ApprovalRule)
class ApprovalRuleAdmin(admin.ModelAdmin):
    form = ApprovalRuleForm
    list_display = ["name", "is_active", "mode", "priority", "action", "revision", "updated_at"]
    list_filter = ["is_active", "mode", "action"]
    ordering = ["priority", "id"]
    actions = ["run_automation_now"]

    def get_readonly_fields(self, request, obj=None):
        fields = ["revision", "created_at", "updated_at"]
        return [*fields, "preview", "backtest"] if obj is not None else fields

    def get_urls(self):
        audit_log = path("audit-log/", self.admin_site.admin_view(self.audit_log_view), name="approvals_audit_log")
        return [audit_log, *super().get_urls()]  # before the catch-all "<object_id>/"

    def save_model(self, request, obj, form, change):
        data = {name: form.cleaned_data[name] for name in form.changed_data}
        if change:
            services.rule_update(
                rule=ApprovalRule.objects.get(pk=obj.pk), data=data, actor=request.user, request=request
            )
        else:
            created = services.rule_create(
                name=obj.name,
                conditions=obj.conditions,
                action=obj.action,
                is_active=obj.is_active,
                mode=obj.mode,
                priority=obj.priority,
                scope_entity_type=obj.scope_entity_type,
                scope_tags=obj.scope_tags,
                actor=request.user,
                request=request,
            )
            obj.pk = created.pk

    def delete_model(self, request, obj):
        services.rule_delete(rule=obj, actor=request.user, request=request)

    def delete_queryset(self, request, queryset):
        for rule in queryset:
            services.rule_delete(rule=rule, actor=request.user, request=request)

    @admin.display(description="Preview")
    def preview(self, obj: ApprovalRule):
        try:
            evaluated, matched, sample = selectors.rule_preview(obj, limit=RULE_PREVIEW_MAX_VERSIONS)
        except rules.RuleInvalid as exc:
            return f"Cannot preview: {exc}"
        summary = format_html(
            "<p><strong>{}</strong> pending versions evaluated (the oldest, at most {}); "
            "<strong>{}</strong> matched; action: <strong>{}</strong>.</p>",
            evaluated,
            f"{RULE_PREVIEW_MAX_VERSIONS:,}",
            matched,
            obj.get_action_display(),
        )
        if not sample:
            return summary
        rows = format_html_join(
            "",
            "<tr><td><a href='{}'>{}</a></td><td>{}</td><td>{} {}</td><td>{}</td></tr>",
            (
                (
                    reverse("admin:approvals_version_change", args=[version.pk]),
                    version.pk,
                    version.title,
                    version.entity_type,
                    version.entity_id,
                    version.author,
                )
                for version in sample
            ),
        )
        return format_html(
            "{}<table><thead><tr><th>Version</th><th>Title</th><th>Entity</th><th>Author</th></tr></thead>"
            "<tbody>{}</tbody></table><p class='help'>The first {} matching versions, oldest first.</p>",
            summary,
            rows,
            len(sample),
        )

    @admin.display(description="Backtest")
    def backtest(self, obj: ApprovalRule):
        """What this rule alone, then the active policy with it, would have decided lately."""
        days = settings.AUTOMATION_BACKTEST_DEFAULT_DAYS
        try:
            alone = backtest.policy_backtest([PolicyRule.of(obj)], days=days)
            with_policy = backtest.policy_backtest(selectors.policy_with(obj), days=days)
        except rules.RuleInvalid as exc:
            return f"Cannot backtest: {exc}"
        rows = format_html_join(
            "",
            "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    label,
                    result.total.would_decide,
                    result.total.agreements,
                    "-" if result.total.agreement_rate is None else f"{result.total.agreement_rate:.1%}",
                    result.total.false_approvals,
                    result.total.false_rejections,
                )
                for label, result in (("This rule alone", alone), ("The active policy with it", with_policy))
            ),
        )
        return format_html(
            "<p>Over the <strong>{}</strong> versions decided in the last {} days:</p><table><thead><tr>"
            "<th></th><th>Would decide</th><th>Agrees</th><th>Agreement</th><th>False approvals</th>"
            "<th>False rejections</th></tr></thead><tbody>{}</tbody></table>"
            "<p class='help'>False approval: it would approve what staff rejected or reverted; false "
            "rejection: it would reject what is approved. Ages are evaluated as of now.</p>",
            alone.evaluated,
            days,
            rows,
        )

    @admin.action(description="Run the automation now (with the active policy)", permissions=["change"])
    def run_automation_now(self, request, queryset):
        try:
            job_id = jobs.enqueue_automation_run()
        except jobs.QueueFull as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, f"Automation run queued (job {job_id}); see Platform > Job runs for its outcome.")

    def audit_log_view(self, request):
        """The automation's decisions, newest first, a keyset page at a time (the table has a
        composite primary key, which Django 5.2's admin cannot register)."""
        if not request.user.has_perm(AUDIT_PERMISSION):
            raise PermissionDenied
        filters = AuditLogFilterForm(request.GET)
        rule_names = dict(ApprovalRule.objects.order_by("name").values_list("pk", "name"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Automation audit log",
            "filters": filters,
            "rule_names": rule_names,
            "decisions": ["approved", "rejected"],
            "entries": [],
            "page_size": AUDIT_LOG_PAGE_SIZE,
        }
        if not filters.is_valid():
            return TemplateResponse(request, "admin/approvals/audit_log.html", context)
        queryset = AutomationAuditLog.objects.all()
        for name, column in (("rule", "rule_id"), ("decision", "decision"), ("version", "version_id")):
            if filters.cleaned_data[name]:
                queryset = queryset.filter(**{column: filters.cleaned_data[name]})
        paginator = KeysetPaginator(queryset, AUDIT_LOG_ORDERING)
        cursor = request.GET.get("cursor")
        try:
            direction, position = paginator.decode_position(cursor) if cursor else ("n", None)
        except InvalidCursor:
            self.message_user(request, "That page link is not valid; showing the newest entries.", messages.WARNING)
            return HttpResponseRedirect(url_without(request, "cursor"))
        if direction == "n":
            page = paginator.page(first=AUDIT_LOG_PAGE_SIZE, after=position)
        else:
            page = paginator.page(last=AUDIT_LOG_PAGE_SIZE, before=position)
        context["entries"] = [
            {
                "entry": entry,
                "rule_name": rule_names.get(entry.rule_id),
                "rule_url": reverse("admin:approvals_approvalrule_change", args=[entry.rule_id]),
                "version_url": reverse("admin:approvals_version_change", args=[entry.version_id]),
            }
            for entry in page
        ]
        if page and page.has_next:
            context["older_url"] = url_with(request, cursor=paginator.encode_position(page[-1], "n"))
        if page and page.has_previous:
            context["newer_url"] = url_with(request, cursor=paginator.encode_position(page[0], "p"))
        if cursor:
            context["newest_url"] = url_without(request, "cursor")
        return TemplateResponse(request, "admin/approvals/audit_log.html", context)


class EntityAdmin(BigTableAdmin):
    entity_type: str = ""
    list_display = ["title", "author", "updated_at"]
    list_select_related = ["author"]
    search_fields = ["=id"]
    autocomplete_fields = ["author"]
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request, obj=None):
        # Existing content changes only through approved versions.
        return ["title", "body", "author", "created_at", "updated_at"] if obj else ["created_at", "updated_at"]

    def save_model(self, request, obj, form, change):
        if change:
            return  # every field is read-only once created
        created = services.entity_create(
            entity_type=self.entity_type, title=obj.title, body=obj.body, author=obj.author, request=request
        )
        obj.pk = created.pk

    def delete_model(self, request, obj):
        services.entity_delete(entity=obj, actor=request.user, request=request)

    def delete_queryset(self, request, queryset):
        services.entities_delete(
            entity_type=self.entity_type,
            entity_ids=list(queryset.values_list("pk", flat=True)),
            actor=request.user,
            request=request,
        )


@admin.register(Topic)
class TopicAdmin(EntityAdmin):
    entity_type = EntityType.TOPIC


@admin.register(Atom)
class AtomAdmin(EntityAdmin):
    entity_type = EntityType.ATOM


@admin.register(AuthorProfile)
class AuthorProfileAdmin(admin.ModelAdmin):
    list_display = ["user", "trust_level"]
    list_select_related = ["user"]
    search_fields = ["user__username"]
    autocomplete_fields = ["user"]

    def save_model(self, request, obj, form, change):
        saved = services.author_trust_set(
            user=obj.user, trust_level=obj.trust_level, actor=request.user, request=request
        )
        obj.pk = saved.pk
