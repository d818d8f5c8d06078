"""The task serializer's written-out output renders as what DRF's field machinery renders.

Compared as the bytes each renderer sends (orjson for the API, DRF's encoder for the browsable
API): in UTC, datetimes pass through to the renderer instead of being formatted to text first."""

import datetime as dt
import zoneinfo

import pytest
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer

from project.api.renderers import ORJSONRenderer
from tasks import selectors
from tasks.api import TaskSerializer
from tasks.models import Task
from tests.factories import TaskFactory, UserFactory

aware_datetimes = st.datetimes(
    min_value=dt.datetime(1900, 1, 1),
    max_value=dt.datetime(2200, 1, 1),
    timezones=st.sampled_from([dt.UTC, zoneinfo.ZoneInfo("Europe/Paris"), zoneinfo.ZoneInfo("America/New_York")]),
)
tasks = st.builds(
    Task,
    id=st.integers(min_value=1, max_value=2**63 - 1),
    project_id=st.integers(min_value=1, max_value=2**63 - 1),
    assignee_id=st.none() | st.integers(min_value=1, max_value=2**63 - 1),
    title=st.text(max_size=300),
    description=st.text(max_size=500),
    status=st.sampled_from(Task.Status.values) | st.sampled_from(list(Task.Status)),
    priority=st.sampled_from(Task.Priority.values),
    deadline=st.none() | aware_datetimes,
    tags=st.lists(st.text(max_size=50), max_size=20),
    created_at=aware_datetimes,
    updated_at=aware_datetimes,
    completed_at=st.none() | aware_datetimes,
)


def assert_renders_alike(written_out, reference):
    for renderer in (ORJSONRenderer(), JSONRenderer()):
        assert renderer.render(written_out) == renderer.render(reference), type(renderer).__name__


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])
@settings(max_examples=300, deadline=None)
@given(task=tasks)
def test_task_output_equals_drf_field_by_field_rendering(zone, task):
    with timezone.override(zone):
        written_out = TaskSerializer(task).data
        reference = serializers.ModelSerializer.to_representation(TaskSerializer(), task)

    assert_renders_alike(dict(written_out), dict(reference))


@pytest.mark.django_db
@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])
def test_rows_the_api_reads_render_as_their_model_instances_do(zone):
    now = timezone.now()
    TaskFactory(assignee=UserFactory(), deadline=now, tags=["a", "b"], completed_at=now, status=Task.Status.DONE)
    TaskFactory(assignee=None, deadline=None, tags=[])

    with timezone.override(zone):
        from_rows = TaskSerializer(list(selectors.task_rows().order_by("id")), many=True).data
        reference = [
            serializers.ModelSerializer.to_representation(TaskSerializer(), task)
            for task in selectors.task_list().order_by("id")
        ]

    assert_renders_alike([dict(row) for row in from_rows], [dict(row) for row in reference])
    assert len(reference) == 2
