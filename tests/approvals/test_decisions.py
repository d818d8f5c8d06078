"""Human decisions: one at a time or in bulk, all or nothing, applied to the entity, reverted."""

import pytest

from approvals import services
from approvals.exceptions import NotDecidable, RateLimited, VersionsNotFound
from approvals.models import Topic, Version
from project.activity import activity_for_entity
from project.models import ActivityLog
from tests.approvals.factories import TopicFactory, VersionFactory
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def reviewer():
    return UserFactory()


@pytest.fixture(autouse=True)
def one_rate_limit_window(monkeypatch):
    # Every decision in a test falls in the same minute, wherever the clock is.
    monkeypatch.setattr("approvals.ratelimit.current_window", lambda: 29_000_000)


def test_approving_applies_the_version_to_its_entity_in_the_same_transaction(reviewer):
    topic = TopicFactory(title="Old", body="Old body")
    version = VersionFactory(entity_id=topic.pk, title="New", content="New body")

    decision = services.versions_decide(version_ids=[version.pk], approve=True, user=reviewer)

    assert decision.decided == [version.pk]
    topic.refresh_from_db()
    assert (topic.title, topic.body) == ("New", "New body")
    version.refresh_from_db()
    assert (version.status, version.approved, version.decided_by_id) == ("approved", True, reviewer.pk)
    assert (version.replaced_title, version.replaced_content) == ("Old", "Old body")


def test_rejecting_leaves_the_entity_unchanged(reviewer):
    topic = TopicFactory(title="Old")
    version = VersionFactory(entity_id=topic.pk, title="New")

    services.versions_decide(version_ids=[version.pk], approve=False, user=reviewer)

    topic.refresh_from_db()
    assert topic.title == "Old"
    assert Version.objects.get(pk=version.pk).status == "rejected"


def test_when_two_versions_of_one_entity_are_approved_together_the_newest_wins(reviewer):
    topic = TopicFactory()
    older = VersionFactory(entity_id=topic.pk, title="Older")
    newer = VersionFactory(entity_id=topic.pk, title="Newer")

    services.versions_decide(version_ids=[newer.pk, older.pk], approve=True, user=reviewer)

    assert Topic.objects.get(pk=topic.pk).title == "Newer"


def test_bulk_decision_is_all_or_nothing_when_an_id_does_not_exist(reviewer):
    versions = VersionFactory.create_batch(3)

    with pytest.raises(VersionsNotFound) as caught:
        services.versions_decide(version_ids=[v.pk for v in versions] + [999_999], approve=True, user=reviewer)

    assert caught.value.missing_ids == [999_999]
    assert set(Version.objects.values_list("status", flat=True)) == {"pending"}


def test_versions_already_decided_are_reported_and_left_alone(reviewer):
    pending, rejected = VersionFactory(), VersionFactory()
    services.versions_decide(version_ids=[rejected.pk], approve=False, user=reviewer)

    decision = services.versions_decide(version_ids=[pending.pk, rejected.pk], approve=True, user=reviewer)

    assert decision.decided == [pending.pk]
    assert decision.already_decided == [rejected.pk]
    assert Version.objects.get(pk=rejected.pk).status == "rejected"


def test_deciding_one_version_that_is_already_decided_is_refused(reviewer):
    version = VersionFactory()
    services.versions_decide(version_ids=[version.pk], approve=True, user=reviewer)

    with pytest.raises(NotDecidable):
        services.versions_decide(version_ids=[version.pk], approve=False, user=reviewer, single=True)


def test_a_decision_is_recorded_in_the_activity_log_and_found_per_version(reviewer):
    versions = VersionFactory.create_batch(2)

    services.versions_decide(version_ids=[v.pk for v in versions], approve=True, user=reviewer, reason="ok")

    (logged,) = ActivityLog.objects.filter(action="version.approve", user=reviewer)
    assert logged.metadata == {"reason": "ok", "ids": sorted(v.pk for v in versions), "count": 2}
    for version in versions:
        assert [row.pk for row in activity_for_entity("version", version.pk)] == [logged.pk]


def test_reverting_an_approval_restores_the_entity_and_reopens_the_version(reviewer):
    topic = TopicFactory(title="Old", body="Old body")
    version = VersionFactory(entity_id=topic.pk, title="New", content="New body")
    services.versions_decide(version_ids=[version.pk], approve=True, user=reviewer)

    services.version_revert(version_id=version.pk, user=reviewer, reason="wrong")

    topic.refresh_from_db()
    assert (topic.title, topic.body) == ("Old", "Old body")
    version.refresh_from_db()
    assert (version.status, version.approved, version.reverted_by_id) == ("reverted", False, reviewer.pk)
    # A reverted version is open again for a person's decision.
    assert services.versions_decide(version_ids=[version.pk], approve=False, user=reviewer).decided == [version.pk]


def test_reverting_leaves_an_entity_alone_once_a_newer_version_was_applied(reviewer):
    topic = TopicFactory(title="Old")
    first = VersionFactory(entity_id=topic.pk, title="First")
    services.versions_decide(version_ids=[first.pk], approve=True, user=reviewer)
    second = VersionFactory(entity_id=topic.pk, title="Second")
    services.versions_decide(version_ids=[second.pk], approve=True, user=reviewer)

    services.version_revert(version_id=first.pk, user=reviewer)

    assert Topic.objects.get(pk=topic.pk).title == "Second"


def test_only_decided_versions_can_be_reverted(reviewer):
    with pytest.raises(NotDecidable):
        services.version_revert(version_id=VersionFactory().pk, user=reviewer)


def test_approvals_are_limited_per_user_per_minute_counted_in_versions(reviewer, settings):
    settings.APPROVALS_PER_MINUTE = 5
    versions = VersionFactory.create_batch(7)
    services.versions_decide(version_ids=[v.pk for v in versions[:4]], approve=True, user=reviewer)

    with pytest.raises(RateLimited) as caught:
        services.versions_decide(version_ids=[v.pk for v in versions[4:6]], approve=True, user=reviewer)

    assert (caught.value.limit, caught.value.remaining) == (5, 1)
    assert 0 < caught.value.reset_in_s <= 60
    assert Version.objects.filter(pk__in=[v.pk for v in versions[4:6]], status="pending").count() == 2
    # One more fits; another user has a budget of their own.
    services.versions_decide(version_ids=[versions[4].pk], approve=True, user=reviewer)
    services.versions_decide(version_ids=[versions[5].pk], approve=True, user=UserFactory())


def test_rejections_have_their_own_smaller_budget(reviewer, settings):
    settings.APPROVALS_PER_MINUTE, settings.REJECTIONS_PER_MINUTE = 100, 1
    first, second = VersionFactory.create_batch(2)
    services.versions_decide(version_ids=[first.pk], approve=False, user=reviewer)

    with pytest.raises(RateLimited):
        services.versions_decide(version_ids=[second.pk], approve=False, user=reviewer)
    services.versions_decide(version_ids=[second.pk], approve=True, user=reviewer)


def test_a_decision_that_fails_gives_its_budget_back(reviewer, settings, monkeypatch):
    settings.APPROVALS_PER_MINUTE = 2
    versions = VersionFactory.create_batch(2)

    def broken(**kwargs):
        raise RuntimeError("activity log unavailable")

    monkeypatch.setattr(services, "activity_record_bulk", broken)
    with pytest.raises(RuntimeError):
        services.versions_decide(version_ids=[v.pk for v in versions], approve=True, user=reviewer)
    monkeypatch.undo()

    decision = services.versions_decide(version_ids=[v.pk for v in versions], approve=True, user=reviewer)
    assert len(decision.decided) == 2
