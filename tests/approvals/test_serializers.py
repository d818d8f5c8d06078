"""The version serializer's written-out output renders as what DRF's field machinery renders.

Compared as the bytes each renderer sends (orjson for the API, DRF's encoder for the browsable
API), as tests/tasks/test_serializers.py does for tasks."""

import pytest
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework import serializers

from approvals import selectors
from approvals.api import VersionSerializer
from approvals.models import EntityType, Version
from tests.approvals.factories import VersionFactory
from tests.tasks.test_serializers import assert_renders_alike, aware_datetimes

ids = st.integers(min_value=1, max_value=2**63 - 1)
versions = st.builds(
    Version,
    id=ids,
    entity_type=st.sampled_from(EntityType.values) | st.sampled_from(list(EntityType)),
    entity_id=ids,
    title=st.text(max_size=300),
    content=st.text(max_size=500),
    tags=st.lists(st.text(max_size=50), max_size=20),
    author_id=ids,
    status=st.sampled_from(Version.Status.values) | st.sampled_from(list(Version.Status)),
    decided_by_id=st.none() | ids,
    decided_by_rule_id=st.none() | ids,
    decision_reason=st.text(max_size=500),
    decided_at=st.none() | aware_datetimes,
    reverted_by_id=st.none() | ids,
    reverted_at=st.none() | aware_datetimes,
    created_at=aware_datetimes,
)


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])
@settings(max_examples=300, deadline=None)
@given(version=versions)
def test_version_output_equals_drf_field_by_field_rendering(zone, version):
    with timezone.override(zone):
        written_out = VersionSerializer(version).data
        reference = serializers.ModelSerializer.to_representation(VersionSerializer(), version)

    assert_renders_alike(dict(written_out), dict(reference))


@pytest.mark.django_db
@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])
def test_rows_the_list_reads_render_as_their_model_instances_do(zone):
    decided = VersionFactory(tags=["a", "b"])
    Version.objects.filter(pk=decided.pk).update(
        status=Version.Status.APPROVED, approved=True, decided_by=decided.author, decided_at=timezone.now()
    )
    VersionFactory(tags=[])

    with timezone.override(zone):
        from_rows = VersionSerializer(list(selectors.version_rows().order_by("id")), many=True).data
        reference = [
            serializers.ModelSerializer.to_representation(VersionSerializer(), version)
            for version in selectors.version_list().order_by("id")
        ]

    assert_renders_alike([dict(row) for row in from_rows], [dict(row) for row in reference])
    assert len(reference) == 2 and reference[0]["decided_at"] is not None
