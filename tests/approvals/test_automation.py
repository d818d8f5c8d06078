"""The automation: set-based batches, SKIP LOCKED, deadlines, audit rows, exactly-once decisions."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals import automation, jobs, selectors, services
from approvals.models import ApprovalRule, AutomationAuditLog, Topic, Version
from approvals.policy import Policy, PolicyRule
from project.models import JobRun
from tests.approvals.factories import RuleFactory, TopicFactory, VersionFactory
from tests.factories import UserFactory

SHORT = {"field": "content_length", "op": "lt", "value": 20}


def active(*rules: ApprovalRule) -> Policy:
    return Policy.of(PolicyRule.of(rule) for rule in rules)


@pytest.fixture
def short_edits_rule(db):
    return RuleFactory(name="Short edits", conditions=SHORT, action="approve", is_active=True)


@pytest.mark.django_db
def test_a_batch_decides_only_the_versions_the_rule_matches_and_audits_each(short_edits_rule):
    topic = TopicFactory(title="Old")
    short = VersionFactory(entity_id=topic.pk, title="Short", content="tiny")
    long = VersionFactory(content="x" * 50)

    batch = automation.automation_decide_batch(
        policy=active(short_edits_rule), after=None, batch_size=500, as_of=timezone.now()
    )

    assert (batch.claimed, batch.decided_ids) == (2, [short.pk])
    short.refresh_from_db()
    assert (short.status, short.decided_by_rule_id, short.decided_by_id) == ("approved", short_edits_rule.pk, None)
    assert "Short edits" in short.decision_reason
    assert Version.objects.get(pk=long.pk).status == "pending"
    assert Topic.objects.get(pk=topic.pk).title == "Short"  # applied in the same transaction
    (audit,) = AutomationAuditLog.objects.all()
    assert (audit.rule_id, audit.rule_revision, audit.version_id, audit.decision) == (
        short_edits_rule.pk,
        1,
        short.pk,
        "approved",
    )
    assert audit.duration_ms >= 0


@pytest.mark.django_db
def test_a_batch_runs_a_constant_number_of_statements_whatever_its_size(short_edits_rule):
    VersionFactory.create_batch(3, content="tiny")
    with CaptureQueriesContext(connection) as small:
        automation.automation_decide_batch(
            policy=active(short_edits_rule), after=None, batch_size=500, as_of=timezone.now()
        )
    VersionFactory.create_batch(40, content="tiny")
    with CaptureQueriesContext(connection) as large:
        automation.automation_decide_batch(
            policy=active(short_edits_rule), after=None, batch_size=500, as_of=timezone.now()
        )

    assert len(small) == len(large)
    updates = [q["sql"] for q in large.captured_queries if "UPDATE" in q["sql"] and "RETURNING" in q["sql"]]
    assert len(updates) == 1


@pytest.mark.django_db
def test_a_run_walks_the_backlog_oldest_first_in_batches(short_edits_rule):
    versions = VersionFactory.create_batch(7, content="tiny")

    result = automation.automation_run(policy=active(short_edits_rule), batch_size=3, deadline_s=None)

    assert (result.batches, result.claimed, result.decided) == (3, 7, 7)
    assert not Version.objects.filter(pk__in=[v.pk for v in versions], status="pending").exists()


@pytest.mark.django_db
def test_versions_the_rule_does_not_match_do_not_stall_the_run(short_edits_rule):
    VersionFactory.create_batch(4, content="x" * 50)  # never matched, oldest
    matched = VersionFactory.create_batch(2, content="tiny")

    result = automation.automation_run(policy=active(short_edits_rule), batch_size=2, deadline_s=None)

    assert result.decided == 2
    assert set(Version.objects.filter(status="approved").values_list("pk", flat=True)) == {v.pk for v in matched}


@pytest.mark.django_db
def test_a_run_stops_between_batches_at_its_deadline_and_the_next_run_continues(short_edits_rule):
    VersionFactory.create_batch(6, content="tiny")
    ticks = iter([0, 0, 100, 100])  # start, before batch 1, before batch 2 (past the deadline)

    first = automation.automation_run(
        policy=active(short_edits_rule), batch_size=2, deadline_s=30, clock=lambda: next(ticks)
    )
    assert (first.batches, first.decided, first.stopped_at_deadline) == (1, 2, True)

    second = automation.automation_run(policy=active(short_edits_rule), batch_size=2, deadline_s=None)
    assert second.decided == 4


@pytest.mark.django_db
def test_dry_run_reports_without_writing(short_edits_rule):
    versions = VersionFactory.create_batch(3, content="tiny")

    result = automation.automation_run(policy=active(short_edits_rule), batch_size=500, deadline_s=None, dry_run=True)

    assert result.decided == 3
    assert sorted(result.sample_ids) == sorted(v.pk for v in versions)
    assert not Version.objects.exclude(status="pending").exists()
    assert not AutomationAuditLog.objects.exists()


@pytest.mark.django_db
def test_version_age_conditions_use_the_run_start_as_now():
    rule = RuleFactory(conditions={"field": "version_age_minutes", "op": "gte", "value": 60}, action="reject")
    old, fresh = VersionFactory(), VersionFactory()
    Version.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=2))

    automation.automation_run(policy=active(rule), batch_size=500, deadline_s=None)

    assert Version.objects.get(pk=old.pk).status == "rejected"
    assert Version.objects.get(pk=fresh.pk).status == "pending"


# --- The job ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_job_uses_the_cached_active_rule_and_records_its_run(short_edits_rule):
    VersionFactory.create_batch(2, content="tiny")

    summary = jobs.run_automation.run_now({})

    assert summary["decided"] == 2
    assert summary["pending"] == 0
    run = JobRun.objects.get(name="approvals.run_automation")
    assert run.status == "succeeded"
    assert run.result["rule_ids"] == [short_edits_rule.pk]


@pytest.mark.django_db
def test_without_an_active_rule_the_job_decides_nothing():
    VersionFactory(content="tiny")
    summary = jobs.run_automation.run_now({})
    assert summary["decided"] == 0
    assert summary["note"] == "no active rule"


@pytest.mark.django_db
def test_changing_a_rule_drops_the_cached_active_rule_at_once(short_edits_rule, django_capture_on_commit_callbacks):
    assert selectors.active_policy_cached().live[0].revision == 1
    with django_capture_on_commit_callbacks(execute=True):
        services.rule_update(rule=short_edits_rule, data={"action": "reject"}, actor=UserFactory())
    (cached,) = selectors.active_policy_cached().live
    assert (cached.revision, cached.action) == (2, "reject")


@pytest.mark.django_db
def test_run_now_refuses_when_the_queue_is_full(settings, monkeypatch):
    settings.AUTOMATION_QUEUE_MAX_SIZE = 3
    monkeypatch.setattr(jobs, "automation_queue_length", lambda: 3)
    with pytest.raises(jobs.QueueFull):
        jobs.enqueue_automation_run()


# --- Exactly once under concurrency --------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_each_version_is_decided_exactly_once_with_two_runs_and_a_human_bulk_approval_racing():
    rule = RuleFactory(conditions={"field": "content_length", "op": "gte", "value": 0}, action="reject", is_active=True)
    reviewer = UserFactory()
    versions = VersionFactory.create_batch(120, content="tiny")
    ids = [v.pk for v in versions]
    start = threading.Barrier(3, timeout=30)
    errors = []

    def in_thread(work):
        def run():
            try:
                start.wait()
                work()
            except Exception as exc:  # surfaced below
                errors.append(exc)
            finally:
                connections.close_all()

        return threading.Thread(target=run)

    def run_automation():
        automation.automation_run(policy=active(rule), batch_size=7, deadline_s=None)

    def human():
        for chunk in (ids[::2][:30], ids[1::2][:30]):
            services.versions_decide(version_ids=chunk, approve=True, user=reviewer)

    threads = [in_thread(run_automation), in_thread(run_automation), in_thread(human)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    rows = {v.pk: v for v in Version.objects.filter(pk__in=ids)}
    assert all(v.status in ("approved", "rejected") for v in rows.values())
    audited = list(AutomationAuditLog.objects.filter(version_id__in=ids).values_list("version_id", flat=True))
    assert len(audited) == len(set(audited))  # no version audited twice
    for version in rows.values():
        by_person, by_rule = version.decided_by_id is not None, version.decided_by_rule_id is not None
        assert by_person != by_rule, version.pk  # decided once, by exactly one of them
        assert (version.pk in audited) == by_rule
        assert version.status == ("approved" if by_person else "rejected")


# --- Records and metrics ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_each_automated_batch_is_recorded_in_the_activity_log_with_the_versions_it_decided(short_edits_rule):
    from project.activity import activity_for_entity
    from project.models import ActivityLog

    versions = VersionFactory.create_batch(2, content="tiny")
    automation.automation_run(policy=active(short_edits_rule), batch_size=500, deadline_s=None)

    (row,) = ActivityLog.objects.filter(category="approvals", action="version.approve", user=None)
    assert row.entity_type == "version"
    assert row.metadata == {
        "ids": sorted(v.pk for v in versions),
        "count": 2,
        "rule": short_edits_rule.pk,
        "revision": 1,
    }
    assert [found.pk for found in activity_for_entity("version", versions[0].pk)] == [row.pk]


@pytest.mark.django_db
def test_the_false_positive_rate_is_the_share_of_automated_decisions_people_reverted(short_edits_rule):
    assert selectors.false_positive_rate() is None  # nothing decided yet
    versions = VersionFactory.create_batch(4, content="tiny")
    automation.automation_run(policy=active(short_edits_rule), batch_size=500, deadline_s=None)
    services.version_revert(version_id=versions[0].pk, user=UserFactory())

    assert selectors.false_positive_rate() == 0.25
    assert selectors.false_positive_rate(window_hours=0) is None  # outside the window


@pytest.mark.django_db
def test_the_job_publishes_its_metrics(short_edits_rule):
    from prometheus_client import REGISTRY

    def sample(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = sample("automation_decisions_total", decision="approved")
    runs_before = sample("automation_job_duration_seconds_count")
    batches_before = sample("automation_batch_duration_seconds_count")
    VersionFactory.create_batch(3, content="tiny")
    VersionFactory(content="x" * 50)  # stays pending

    jobs.run_automation.run_now({})

    assert sample("automation_decisions_total", decision="approved") == before + 3
    assert sample("automation_job_duration_seconds_count") == runs_before + 1
    assert sample("automation_rule_evaluation_seconds_count") >= 1
    assert sample("automation_batch_duration_seconds_count") >= batches_before + 1
    assert sample("versions_pending_count") == 1
    assert sample("automation_false_positive_rate") == 0.0


@pytest.mark.django_db
def test_seeding_versions_is_idempotent_and_ships_a_valid_inactive_example_rule():
    from django.core.management import call_command

    from approvals import rules
    from approvals.seed import EXAMPLE_RULE

    call_command("seed_demo", "--versions", "40", verbosity=0)
    call_command("seed_demo", "--versions", "40", verbosity=0)

    assert Version.objects.filter(status="pending").count() == 40
    example = ApprovalRule.objects.get(name=EXAMPLE_RULE["name"])
    assert not example.is_active
    rules.validate_conditions(example.conditions)
    assert set(Version.objects.values_list("entity_type", flat=True)) == {"topic", "atom"}
