"""Every approvals index serves the query it exists for (the guide's indexes among them).

Plans are read with tests.plans (sequential scans off, in a rolled-back savepoint).
"""

import pytest
from django.utils import timezone

from approvals import rules, selectors
from approvals.models import ApprovalRule, AutomationAuditLog, Version
from tests.approvals.factories import RuleFactory, VersionFactory
from tests.plans import index_scans, scan_on

pytestmark = pytest.mark.django_db


@pytest.fixture
def versions():
    return VersionFactory.create_batch(3)


def test_every_version_index_has_a_plan_test():
    assert {index.name for index in Version._meta.indexes} == {
        "version_approved_idx",
        "version_pending_created_idx",
        "version_entity_idx",
        "version_decided_by_idx",
        "version_decided_rule_idx",
        "version_reverted_by_idx",
    }


@pytest.mark.parametrize(
    ("column", "index"),
    [
        ("decided_by_id", "version_decided_by_idx"),
        ("decided_by_rule_id", "version_decided_rule_idx"),
        ("reverted_by_id", "version_reverted_by_idx"),
    ],
)
def test_on_delete_set_null_finds_the_versions_through_the_partial_index(versions, column, index):
    # Deleting a user or a rule runs UPDATE ... WHERE <column> = <id>: a value, never NULL.
    scan = scan_on(index_scans(Version.objects.filter(**{column: 1}), only=index), index)
    assert column in scan.index_cond


def test_badge_lookup_by_approved_uses_the_guides_partial_index(versions):
    # Guide: idx_versions_approved ON versions(approved) WHERE entity_type IN ('topic', 'atom').
    queryset = Version.objects.filter(entity_type__in=["topic", "atom"], approved=False)
    scan = scan_on(index_scans(queryset, only="version_approved_idx"), "version_approved_idx")
    assert "approved" in scan.index_cond


def test_pending_count_reads_only_the_pending_partial_index(versions):
    # Guide: idx_versions_approved_created, partial on "not approved" — here, on pending.
    # The partial index's predicate is the whole condition, so it needs no Index Cond.
    scans = index_scans(Version.objects.filter(status="pending").values("pk"), only="version_pending_created_idx")
    assert scan_on(scans, "version_pending_created_idx")


def test_the_automation_claims_oldest_pending_first_through_the_partial_index(versions):
    newest = Version.objects.order_by("-created_at", "-id").first()
    queryset = Version.objects.filter(status="pending", created_at__lte=newest.created_at).order_by("created_at", "id")
    scan = scan_on(index_scans(queryset[:500], only="version_pending_created_idx"), "version_pending_created_idx")
    assert "created_at" in scan.index_cond


def test_earlier_approved_versions_of_an_entity_are_found_through_the_entity_index(versions):
    matching = rules.matching_versions(
        Version.objects.all(),
        {"field": "entity_has_approved_versions", "op": "eq", "value": True},
        as_of=timezone.now(),
    )
    # The EXISTS probe for each version: same entity, created earlier, by index condition.
    probes = [
        scan
        for scan in index_scans(matching, only="version_entity_idx")
        if scan.index == "version_entity_idx"
        and "entity_id = " in scan.index_cond
        and "created_at <" in scan.index_cond
    ]
    assert probes


def test_the_active_rule_is_found_through_the_guides_partial_index():
    RuleFactory(is_active=True)
    RuleFactory()
    # Guide: idx_approval_rules_is_active ON approval_rules(is_active) WHERE is_active.
    assert scan_on(index_scans(ApprovalRule.objects.filter(is_active=True), only="rule_active_idx"), "rule_active_idx")


def test_any_number_of_rules_may_be_active():
    RuleFactory(is_active=True)
    RuleFactory(is_active=True)
    assert ApprovalRule.objects.filter(is_active=True).count() == 2


def test_audit_log_time_range_uses_created_at_desc(versions):
    # Guide: idx_automation_audit_created_at_desc.
    queryset = AutomationAuditLog.objects.filter(created_at__gte=timezone.now()).order_by("-created_at")
    assert any("created_at >=" in scan.index_cond for scan in index_scans(queryset))


def test_audit_log_per_rule_uses_rule_id_created_at(versions):
    # Guide: idx_automation_audit_rule_id_created. Partitions carry their own copies of the
    # parent's indexes, named after the partition; the condition shows which one is read.
    scans = index_scans(AutomationAuditLog.objects.filter(rule_id=1).order_by("-created_at"))
    assert any("rule_id = " in scan.index_cond for scan in scans)


def test_a_versions_audit_trail_uses_the_version_index(versions):
    scans = index_scans(AutomationAuditLog.objects.filter(version_id=versions[0].pk))
    assert any("version_id = " in scan.index_cond for scan in scans)


def test_pending_count_selector_runs_one_count_query(versions, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert selectors.pending_count() == 3
