"""One URL prefix for reconciliation: /api/v1/reconciliations/. The former /api/v1/reconciliation/
paths (and `unmatched/`, now `exceptions/`) still answer, flagged deprecated, absent from the schema."""

import pytest
from drf_spectacular.generators import SchemaGenerator

from reconciliation.models import TenantMembership
from tests.reconciliation.factories import JobFactory, member

pytestmark = pytest.mark.django_db

CURRENT = "/api/v1/reconciliations/"
FORMER = "/api/v1/reconciliation/"


@pytest.fixture
def viewer(client_for):
    job = JobFactory()
    return client_for(member(job.tenant, role=TenantMembership.Role.VIEWER))


@pytest.mark.parametrize("path", ["jobs/", "executions/", "matches/", "exceptions/", "webhook-endpoints/"])
def test_current_paths_answer_without_a_deprecation_header(viewer, path):
    response = viewer.get(CURRENT + path)

    assert response.status_code == 200, response.content
    assert "Deprecation" not in response


@pytest.mark.parametrize(
    ("former", "current"),
    [("jobs/", "jobs/"), ("executions/", "executions/"), ("unmatched/", "exceptions/"), ("tenants/", "tenants/")],
)
def test_former_paths_answer_the_same_flagged_deprecated(viewer, former, current):
    old = viewer.get(FORMER + former)
    new = viewer.get(CURRENT + current)

    assert old.status_code == new.status_code == 200
    assert old.json() == new.json()
    assert old["Deprecation"].startswith("@")  # RFC 9745: the date it was deprecated
    assert f'<{CURRENT}>; rel="successor-version"' == old["Link"]


def test_a_former_path_refuses_what_the_current_one_refuses(viewer):
    assert viewer.get(FORMER + "jobs/999999999/").status_code == 404
    assert viewer.post(FORMER + "jobs/", {"name": "x"}, format="json").status_code == 400


def test_the_schema_lists_only_the_current_prefix():
    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]

    assert f"{CURRENT}exceptions/" in paths
    assert f"{CURRENT}{{id}}/summary" in paths
    assert not [path for path in paths if path.startswith(FORMER)]
