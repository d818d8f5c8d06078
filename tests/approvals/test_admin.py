"""The approvals admin: the pending badge, decide actions, the version diff, the rule editor, the audit log."""

import html
import json
import os
import re

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from approvals import automation, selectors, services
from approvals.models import ApprovalRule, AutomationAuditLog, Topic, Version
from approvals.policy import Policy, PolicyRule
from approvals.templatetags.approvals_admin import pending_badge
from project.activity import activity_for_entity
from project.models import ActivityLog
from tests.approvals.factories import RuleFactory, TopicFactory, VersionFactory
from tests.conftest import grant
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

INDEX = reverse("admin:index")
VERSION_CHANGELIST = reverse("admin:approvals_version_changelist")
RULE_CHANGELIST = reverse("admin:approvals_approvalrule_changelist")
RULE_ADD = reverse("admin:approvals_approvalrule_add")
AUDIT_LOG = reverse("admin:approvals_audit_log")
BADGE_COUNT = re.compile(r'id="approvals-pending-count">(\d+)<')
SHORT = {"field": "content_length", "op": "lt", "value": 20}
RULE_PERMISSIONS = [f"approvals.{action}_approvalrule" for action in ("view", "add", "change", "delete")]
REVIEWER_PERMISSIONS = [
    "approvals.view_version",
    "approvals.decide_version",
    "approvals.view_automationauditlog",
    *RULE_PERMISSIONS,
]


@pytest.fixture(autouse=True)
def own_cache_namespace(settings):
    """Other test runs share this Redis and empty it around each of their tests: the badge's
    cached count must not vanish mid-test, so this module keeps its keys under its own prefix."""
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"opsdeck-test-{os.getpid()}"}}
    cache.delete_pattern("*")
    yield
    cache.delete_pattern("*")


@pytest.fixture(autouse=True)
def one_rate_limit_window(monkeypatch):
    monkeypatch.setattr("approvals.ratelimit.current_window", lambda: 29_000_002)


def staff(*permissions: str):
    return grant(UserFactory(is_staff=True), *permissions)


@pytest.fixture
def reviewer():
    return staff(*REVIEWER_PERMISSIONS)


@pytest.fixture
def logged_in(client):
    def login(user):
        client.force_login(user)
        return client

    return login


def text(response) -> str:
    """The page's text without tags, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


def version_queries(queries) -> list[str]:
    return [query["sql"] for query in queries if Version._meta.db_table in query["sql"]]


def run_automation(rule: ApprovalRule) -> None:
    automation.automation_run(policy=Policy.of([PolicyRule.of(rule)]), batch_size=500, deadline_s=None)


# --- The pending badge ---------------------------------------------------------------------------------


def test_badge_shows_the_cached_pending_count_on_every_admin_page(reviewer, logged_in):
    VersionFactory.create_batch(3)
    VersionFactory(status=Version.Status.REJECTED)
    assert selectors.pending_count_cached() == 3
    VersionFactory()  # not yet counted: the badge reads the cache
    client = logged_in(reviewer)

    with CaptureQueriesContext(connection) as index_queries:
        index = client.get(INDEX)
    other = client.get(RULE_CHANGELIST)

    for response in (index, other):
        assert response.status_code == 200
        assert BADGE_COUNT.findall(response.content.decode()) == ["3"]
        assert f'href="{VERSION_CHANGELIST}?status__exact=pending"' in response.content.decode()
        assert f'data-url="{reverse("approvals-pending-count")}"' in response.content.decode()
    assert version_queries(index_queries) == []


def test_badge_refresh_endpoint_returns_the_count_to_the_admin_session(reviewer, logged_in):
    VersionFactory.create_batch(2)

    response = logged_in(reviewer).get(reverse("approvals-pending-count"))

    assert response.status_code == 200
    assert response.json() == {"pending": 2}


def test_badge_is_absent_and_costs_no_query_for_staff_without_view_version(logged_in):
    VersionFactory.create_batch(2)
    rule_editor = staff(*RULE_PERMISSIONS)

    with CaptureQueriesContext(connection) as queries:
        response = logged_in(rule_editor).get(INDEX)

    assert response.status_code == 200
    assert "approvals-pending-badge" not in response.content.decode()
    assert version_queries(queries) == []
    assert cache.get(selectors.PENDING_COUNT_CACHE_KEY) is None


def test_badge_tag_runs_no_query_for_a_user_without_the_permission(django_assert_num_queries):
    request = RequestFactory().get(INDEX)
    request.user = staff(*RULE_PERMISSIONS)
    request.user.has_perm("approvals.view_approvalrule")  # the admin's app list loads permissions first

    with django_assert_num_queries(0):
        assert pending_badge({"request": request}) == {"show": False}


def test_version_changelist_has_no_badge_of_its_own(reviewer, logged_in):
    VersionFactory()

    response = logged_in(reviewer).get(VERSION_CHANGELIST)

    assert response.status_code == 200
    assert BADGE_COUNT.findall(response.content.decode()) == ["1"]  # the header's, once


# --- Version changelist and decide actions -----------------------------------------------------------


def test_approve_action_decides_through_the_service_and_reports_already_decided_versions(reviewer, logged_in):
    topic = TopicFactory(title="Old title", body="Old body.")
    pending = VersionFactory(entity_id=topic.pk, title="New title", content="New body.")
    rejected = VersionFactory(status=Version.Status.REJECTED)

    response = logged_in(reviewer).post(
        VERSION_CHANGELIST,
        {"action": "approve_selected", "_selected_action": [pending.pk, rejected.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert [str(message) for message in response.context["messages"]] == [
        "1 version(s) approved. 1 were already decided and left as they were."
    ]
    pending.refresh_from_db()
    assert (pending.status, pending.decided_by_id) == (Version.Status.APPROVED, reviewer.pk)
    assert Version.objects.get(pk=rejected.pk).status == Version.Status.REJECTED
    topic.refresh_from_db()
    assert (topic.title, topic.body) == ("New title", "New body.")
    (logged,) = ActivityLog.objects.filter(action="version.approve")
    assert (logged.metadata["ids"], logged.user_id) == ([pending.pk], reviewer.pk)


def test_users_without_decide_version_can_neither_see_nor_run_the_decide_actions(logged_in):
    version = VersionFactory()
    viewer = staff("approvals.view_version")
    client = logged_in(viewer)

    page = client.get(VERSION_CHANGELIST)
    posted = client.post(VERSION_CHANGELIST, {"action": "approve_selected", "_selected_action": [version.pk]})

    assert page.status_code == 200
    for action in ("approve_selected", "reject_selected", "revert_selected"):
        assert action not in page.content.decode()
    assert posted.status_code == 200
    assert Version.objects.get(pk=version.pk).status == Version.Status.PENDING
    assert not ActivityLog.objects.filter(action="version.approve").exists()


def test_version_changelist_runs_the_same_number_of_queries_for_5_and_25_versions(reviewer, logged_in):
    rule = RuleFactory()
    client = logged_in(reviewer)

    def make(count: int) -> None:
        for index in range(count):
            if index % 2:
                VersionFactory(status=Version.Status.REJECTED, decided_by=UserFactory(), decided_by_rule=rule)
            else:
                VersionFactory()

    def listed() -> tuple[int, int]:
        cache.delete(selectors.PENDING_COUNT_CACHE_KEY)  # both pages count pending versions afresh
        with CaptureQueriesContext(connection) as queries:
            response = client.get(VERSION_CHANGELIST)
        assert response.status_code == 200
        return len(response.context["cl"].result_list), len(queries)

    make(5)
    five, five_queries = listed()
    make(20)
    twenty_five, twenty_five_queries = listed()

    assert (five, twenty_five) == (5, 25)
    assert twenty_five_queries == five_queries


def test_version_changelist_does_not_fetch_the_content_it_does_not_show(reviewer, logged_in):
    VersionFactory(content="x" * 50_000)

    with CaptureQueriesContext(connection) as queries:
        response = logged_in(reviewer).get(VERSION_CHANGELIST)

    assert response.status_code == 200
    page_query = next(query["sql"] for query in queries if '"approvals_version"."title"' in query["sql"])
    assert '"approvals_version"."content"' not in page_query
    assert '"approvals_version"."replaced_content"' not in page_query


# --- The version page's diff -------------------------------------------------------------------------


def test_version_page_shows_a_side_by_side_diff_with_the_added_word_marked(reviewer, logged_in):
    topic = TopicFactory(title="Refunds", body="Refunds take five days.\nAsk support.")
    version = VersionFactory(
        entity_id=topic.pk, title="Refunds <em>policy</em>", content="Refunds take five business days.\nAsk support."
    )

    with CaptureQueriesContext(connection) as queries:
        response = logged_in(reviewer).get(reverse("admin:approvals_version_change", args=[version.pk]))

    page = response.content.decode()
    assert response.status_code == 200
    assert '<table class="diff"' in page
    assert '<span class="diff_add">&nbsp;business</span>' in page
    assert "Refunds&nbsp;&lt;em&gt;policy&lt;/em&gt;" in page  # escaped by difflib, not rendered
    assert "<em>policy" not in page
    assert len([query for query in queries if Topic._meta.db_table in query["sql"]]) == 1
    assert f'href="{AUDIT_LOG}?version={version.pk}"' in page


def test_version_page_says_when_the_entity_is_gone(reviewer, logged_in):
    version = VersionFactory(entity_id=987_654_321)

    response = logged_in(reviewer).get(reverse("admin:approvals_version_change", args=[version.pk]))

    assert response.status_code == 200
    assert "topic 987654321 no longer exists." in text(response)


# --- The rule editor ---------------------------------------------------------------------------------


def test_rule_change_page_previews_what_the_rule_would_decide(reviewer, logged_in):
    rule = RuleFactory(conditions=SHORT, action=ApprovalRule.Action.REJECT)
    short = VersionFactory.create_batch(2, content="tiny", title="Short one")
    VersionFactory(content="x" * 50)
    VersionFactory(content="tiny", status=Version.Status.REJECTED)  # not pending: not evaluated

    response = logged_in(reviewer).get(reverse("admin:approvals_approvalrule_change", args=[rule.pk]))

    assert response.status_code == 200
    page = text(response)
    summary = re.search(
        r"(\d+) pending versions evaluated \(the oldest, at most 10,000\); (\d+) matched; action: (\w+)", page
    )
    assert summary is not None
    assert summary.groups() == ("3", "2", "Reject")
    for version in short:
        assert reverse("admin:approvals_version_change", args=[version.pk]) in response.content.decode()
    assert page.count("Short one") == 2


def test_rule_change_page_shows_the_backtest_of_the_rule_and_of_the_policy_with_it(reviewer, logged_in):
    rule = RuleFactory(conditions=SHORT, action=ApprovalRule.Action.APPROVE)
    approved, rejected = VersionFactory(content="tiny"), VersionFactory(content="tiny")
    services.versions_decide(version_ids=[approved.pk], approve=True, user=UserFactory())
    services.versions_decide(version_ids=[rejected.pk], approve=False, user=UserFactory())

    page = text(logged_in(reviewer).get(reverse("admin:approvals_approvalrule_change", args=[rule.pk])))

    assert "Over the 2 versions decided in the last 30 days" in page
    # would decide, agrees, agreement, false approvals, false rejections
    assert re.search(r"This rule alone\s+2\s+1\s+50\.0%\s+1\s+0", page)
    assert re.search(r"The active policy with it\s+2\s+1\s+50\.0%\s+1\s+0", page)


def test_rule_conditions_are_edited_as_pretty_printed_json_with_a_pointer_to_the_docs(reviewer, logged_in):
    rule = RuleFactory(conditions={"all": [SHORT, {"field": "author.is_staff", "op": "eq", "value": False}]})

    response = logged_in(reviewer).get(reverse("admin:approvals_approvalrule_change", args=[rule.pk]))

    page = response.content.decode()
    rule.refresh_from_db()  # in jsonb's key order
    shown = {"all": [{"field": c["field"], "op": c["op"], "value": c["value"]} for c in rule.conditions["all"]]}
    assert html.escape(json.dumps(shown, indent=2)) in page  # indented, in reading order
    assert "font-family: monospace" in page
    assert "docs/approvals-rules.md" in page


def test_saving_an_invalid_rule_shows_the_json_path_error_and_saves_nothing(reviewer, logged_in):
    rule = RuleFactory(conditions=SHORT)
    invalid = {"all": [SHORT, {"field": "content_length", "op": "like", "value": 3}]}
    client = logged_in(reviewer)
    form = {"name": "Bad", "action": "approve", "conditions": json.dumps(invalid), "_save": "Save"}

    added = client.post(RULE_ADD, form)
    changed = client.post(reverse("admin:approvals_approvalrule_change", args=[rule.pk]), form)

    for response in (added, changed):
        assert response.status_code == 200
        (error,) = response.context["adminform"].form.errors["conditions"]
        assert error.startswith("conditions.all[1].op: unknown operator 'like'")
        assert html.escape(error) in response.content.decode()
    assert list(ApprovalRule.objects.values_list("name", "revision", "conditions")) == [(rule.name, 1, SHORT)]
    assert not ActivityLog.objects.filter(category="approvals", action__startswith="rule.").exists()


def test_saving_a_valid_rule_change_goes_through_the_service(reviewer, logged_in):
    rule = RuleFactory(conditions=SHORT)
    changed = {"field": "content_length", "op": "lt", "value": 30}

    response = logged_in(reviewer).post(
        reverse("admin:approvals_approvalrule_change", args=[rule.pk]),
        {
            "name": rule.name,
            "action": "approve",
            "mode": "live",
            "priority": 100,
            "scope_tags": "[]",
            "conditions": json.dumps(changed),
            "_save": "Save",
        },
    )

    assert response.status_code == 302
    rule.refresh_from_db()
    assert (rule.conditions, rule.revision) == (changed, 2)
    assert ActivityLog.objects.filter(action="rule.update", entity_id=str(rule.pk)).exists()


# --- The audit log -----------------------------------------------------------------------------------


@pytest.fixture
def two_runs():
    """Two automation runs: `approver` approves two short versions, then `rejecter` rejects two more."""
    approver = RuleFactory(name="Approve short", conditions=SHORT, action=ApprovalRule.Action.APPROVE)
    first = VersionFactory.create_batch(2, content="tiny")
    run_automation(approver)
    rejecter = RuleFactory(name="Reject short", conditions=SHORT, action=ApprovalRule.Action.REJECT)
    second = VersionFactory.create_batch(2, content="tiny")
    run_automation(rejecter)
    return approver, first, rejecter, second


def listed_versions(response) -> list[int]:
    return [row["entry"].version_id for row in response.context["entries"]]


def test_audit_log_lists_automated_decisions_newest_first(two_runs, reviewer, logged_in):
    _, first, rejecter, second = two_runs

    response = logged_in(reviewer).get(AUDIT_LOG)

    assert response.status_code == 200
    assert listed_versions(response) == [version.pk for version in reversed(first + second)]
    page = response.content.decode()
    assert f'href="{reverse("admin:approvals_approvalrule_change", args=[rejecter.pk])}"' in page
    assert f"#{rejecter.pk} r1" in page
    assert f'href="{reverse("admin:approvals_version_change", args=[first[0].pk])}"' in page
    assert "older" not in text(response).lower()  # four rows: one page


def test_audit_log_filters_by_rule_decision_and_version(two_runs, reviewer, logged_in):
    approver, first, _, second = two_runs
    client = logged_in(reviewer)

    by_rule = client.get(AUDIT_LOG, {"rule": approver.pk})
    by_decision = client.get(AUDIT_LOG, {"decision": "rejected"})
    by_version = client.get(AUDIT_LOG, {"version": first[1].pk})
    invalid = client.get(AUDIT_LOG, {"decision": "maybe"})

    assert listed_versions(by_rule) == [version.pk for version in reversed(first)]
    assert listed_versions(by_decision) == [version.pk for version in reversed(second)]
    assert listed_versions(by_version) == [first[1].pk]
    assert invalid.status_code == 200
    assert listed_versions(invalid) == []
    assert "Invalid filter" in text(invalid)


def test_audit_log_pages_older_entries_by_keyset(two_runs, reviewer, logged_in, monkeypatch):
    monkeypatch.setattr("approvals.admin.AUDIT_LOG_PAGE_SIZE", 3)
    client = logged_in(reviewer)
    expected = list(AutomationAuditLog.objects.order_by("-created_at", "-id").values_list("version_id", flat=True))

    first_page = client.get(AUDIT_LOG)
    second_page = client.get(first_page.context["older_url"])
    back = client.get(second_page.context["newer_url"])

    assert listed_versions(first_page) + listed_versions(second_page) == expected
    assert "older_url" not in second_page.context
    assert listed_versions(back) == listed_versions(first_page)
    assert client.get(AUDIT_LOG, {"cursor": "not-a-cursor"}).status_code == 302


def test_audit_log_requires_view_automationauditlog(two_runs, logged_in):
    rule_editor = staff(*RULE_PERMISSIONS, "approvals.view_version")
    client = logged_in(rule_editor)

    assert client.get(AUDIT_LOG).status_code == 403
    assert AUDIT_LOG not in client.get(RULE_CHANGELIST).content.decode()
    version = two_runs[1][0]
    assert AUDIT_LOG not in client.get(reverse("admin:approvals_version_change", args=[version.pk])).content.decode()


def test_audit_log_is_linked_from_the_rule_changelist(reviewer, logged_in):
    response = logged_in(reviewer).get(RULE_CHANGELIST)

    assert f'href="{AUDIT_LOG}"' in response.content.decode()


def test_audit_log_runs_a_constant_number_of_queries_for_5_and_30_rows(logged_in):
    rule = RuleFactory(conditions=SHORT)
    client = logged_in(staff("approvals.view_automationauditlog"))

    def listed() -> tuple[int, list[str]]:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(AUDIT_LOG)
        assert response.status_code == 200
        return len(response.context["entries"]), [query["sql"] for query in queries]

    VersionFactory.create_batch(5, content="tiny")
    run_automation(rule)
    five, five_queries = listed()
    VersionFactory.create_batch(25, content="tiny")
    run_automation(rule)
    thirty, thirty_queries = listed()

    assert (five, thirty) == (5, 30)
    assert len(thirty_queries) == len(five_queries)
    assert not any("COUNT(" in sql.upper() for sql in thirty_queries)  # keyset pages, never a count


# --- Entities ----------------------------------------------------------------------------------------


def test_topics_are_created_and_deleted_in_the_admin_through_the_services(logged_in):
    editor = UserFactory(is_staff=True, is_superuser=True)
    client = logged_in(editor)

    added = client.post(
        reverse("admin:approvals_topic_add"), {"title": "Refunds", "body": "v1", "author": editor.pk, "_save": "Save"}
    )
    topic = Topic.objects.get(title="Refunds")
    pending = VersionFactory(entity_id=topic.pk)
    deleted = client.post(reverse("admin:approvals_topic_delete", args=[topic.pk]), {"post": "yes"})

    assert (added.status_code, deleted.status_code) == (302, 302)
    assert not Topic.objects.filter(pk=topic.pk).exists()
    assert not Version.objects.filter(pk=pending.pk).exists()  # entity_delete drops its pending versions
    assert [row.action for row in activity_for_entity("topic", topic.pk)] == ["topic.delete", "topic.create"]


def test_setting_an_authors_trust_level_in_the_admin_goes_through_the_service(admin_client, admin_user):
    from approvals.models import AuthorProfile
    from project.models import ActivityLog
    from tests.factories import UserFactory

    author = UserFactory()
    response = admin_client.post("/admin/approvals/authorprofile/add/", {"user": author.pk, "trust_level": 3})
    assert response.status_code == 302, response.content.decode()[:1500]
    assert AuthorProfile.objects.get(user=author).trust_level == 3
    assert ActivityLog.objects.filter(action="author.trust", entity_id=str(author.pk), user=admin_user).exists()


def test_the_rule_editor_shows_comparisons_as_field_op_value():
    from approvals.admin import ApprovalRuleForm

    stored = {"all": [{"op": "lt", "field": "content_length", "value": 10}]}  # jsonb's own key order
    shown = ApprovalRuleForm.base_fields["conditions"].prepare_value(stored)
    assert shown.index('"field"') < shown.index('"op"') < shown.index('"value"')
