from django import forms
from django.contrib import admin, messages

from approvals import jobs, rules, selectors, services
from approvals.exceptions import ApprovalError
from approvals.models import ApprovalRule, Atom, AuthorProfile, Topic, Version
from project.admin import BigTableAdmin


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


@admin.register(Version)
class VersionAdmin(BigTableAdmin):
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
    list_filter = ["status", "entity_type"]
    list_select_related = ["author", "decided_by", "decided_by_rule"]
    search_fields = ["=id", "=entity_id"]
    search_help_text = "Version id or entity id."
    date_hierarchy = "created_at"
    ordering = ["-created_at", "-id"]
    actions = [_decide_action(True), _decide_action(False), "revert_selected"]
    readonly_fields = [
        "entity_type",
        "entity_id",
        "author",
        "status",
        "approved",
        "decided_by",
        "decided_by_rule",
        "decision_reason",
        "decided_at",
        "reverted_by",
        "reverted_at",
        "replaced_title",
        "replaced_content",
        "created_at",
    ]

    def has_decide_permission(self, request):
        return request.user.has_perm("approvals.decide_version")

    def has_change_permission(self, request, obj=None):
        return False  # decisions are actions; content changes only through new versions

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "pending_count": selectors.pending_count_cached()}
        return super().changelist_view(request, extra_context=extra_context)

    @admin.action(description="Revert selected decisions", permissions=["decide"])
    def revert_selected(self, request, queryset):
        reverted = 0
        for version_id in queryset.values_list("pk", flat=True)[:100]:
            try:
                services.version_revert(version_id=version_id, user=request.user, request=request)
                reverted += 1
            except ApprovalError as exc:
                self.message_user(request, f"Version {version_id}: {exc}", messages.WARNING)
        self.message_user(request, f"{reverted} decision(s) reverted.")


class ApprovalRuleForm(forms.ModelForm):
    class Meta:
        model = ApprovalRule
        fields = ["name", "is_active", "action", "conditions"]

    def clean_conditions(self):
        conditions = self.cleaned_data["conditions"]
        try:
            rules.validate_conditions(conditions)
        except rules.RuleInvalid as exc:
            raise forms.ValidationError(f"{exc.path}: {exc.message}") from None
        return conditions


@admin.register(ApprovalRule)
class ApprovalRuleAdmin(admin.ModelAdmin):
    form = ApprovalRuleForm
    list_display = ["name", "is_active", "action", "revision", "updated_at"]
    list_filter = ["is_active", "action"]
    readonly_fields = ["revision", "created_at", "updated_at"]
    actions = ["run_automation_now"]

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
                actor=request.user,
                request=request,
            )
            obj.pk = created.pk

    def delete_model(self, request, obj):
        services.rule_delete(rule=obj, actor=request.user, request=request)

    @admin.action(description="Run the automation now (with the active rule)", permissions=["change"])
    def run_automation_now(self, request, queryset):
        try:
            job_id = jobs.enqueue_automation_run()
        except jobs.QueueFull as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, f"Automation run queued (job {job_id}); see Platform > Job runs for its outcome.")


class EntityAdmin(BigTableAdmin):
    list_display = ["title", "author", "updated_at"]
    list_select_related = ["author"]
    search_fields = ["=id"]
    autocomplete_fields = ["author"]
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request, obj=None):
        # Existing content changes only through approved versions.
        return ["title", "body", "author", "created_at", "updated_at"] if obj else ["created_at", "updated_at"]


@admin.register(Topic)
class TopicAdmin(EntityAdmin):
    pass


@admin.register(Atom)
class AtomAdmin(EntityAdmin):
    pass


@admin.register(AuthorProfile)
class AuthorProfileAdmin(admin.ModelAdmin):
    list_display = ["user", "trust_level"]
    list_select_related = ["user"]
    search_fields = ["user__username"]
    autocomplete_fields = ["user"]
