"""ActivityLog: one row per act; an entity's history includes the bulk acts that named it."""

import pytest

from project.activity import activity_for_entity, activity_record, activity_record_bulk
from project.models import ActivityLog
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_an_entitys_history_holds_its_own_acts_and_the_bulk_acts_that_named_it():
    user = UserFactory()
    activity_record(category="tasks", action="task.create", user=user, entity_type="task", entity_id=7)
    activity_record_bulk(category="tasks", action="task.bulk_update", user=user, entity_type="task", entity_ids=[5, 7])
    activity_record_bulk(category="tasks", action="task.bulk_update", user=user, entity_type="task", entity_ids=[8])
    activity_record(category="tasks", action="project.create", user=user, entity_type="project", entity_id=7)

    assert [row.action for row in activity_for_entity("task", 7)] == ["task.bulk_update", "task.create"]
    assert [row.action for row in activity_for_entity("task", 8)] == ["task.bulk_update"]


def test_a_bulk_act_is_one_row_listing_its_entities():
    activity_record_bulk(
        category="tasks", action="task.bulk_update", entity_type="task", entity_ids=[3, 1, 2], metadata={"to": "done"}
    )
    (row,) = ActivityLog.objects.all()
    assert (row.entity_type, row.entity_id, row.user_id) == ("task", "", None)
    assert row.metadata == {"to": "done", "ids": [3, 1, 2], "count": 3}


def test_anonymous_users_are_recorded_as_no_user():
    from django.contrib.auth.models import AnonymousUser

    activity_record(category="tasks", action="x", user=AnonymousUser())
    assert ActivityLog.objects.get().user_id is None
