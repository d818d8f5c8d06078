"""The analytics endpoints (reconciliation/analytics_api.py): tenant-scoped, 404 for what is not
yours, 400 for bad parameters, each view's refresh time in every answer.

The viewset is mounted here alone, at its path in reconciliation/api/urls.py.
"""

import datetime
from decimal import Decimal

import pytest
from django.urls import include, path
from django.utils import timezone
from rest_framework.routers import DefaultRouter
from rest_framework.test import APIClient

from project.matviews import refresh_materialized_view
from reconciliation.analytics.matviews import ANALYTICS_VIEWS
from reconciliation.api.analytics import AnalyticsViewSet
from reconciliation.models import Execution, Match, TenantMembership
from tests.factories import UserFactory
from tests.reconciliation.factories import JobFactory, TenantFactory, member

router = DefaultRouter()
router.register("analytics", AnalyticsViewSet, basename="recon-analytics")
urlpatterns = [path("api/v1/reconciliations/", include(router.urls))]

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

BASE = "/api/v1/reconciliations/analytics"
ENDPOINTS = ["daily-summary", "job-performance", "usage-hourly", "match-accuracy"]


@pytest.fixture
def tenants():
    """Tenants A and B, a job each with one succeeded run and one rejected match; views refreshed."""
    now = timezone.now()
    made = {}
    for name in ("a", "b"):
        tenant = TenantFactory()
        job = JobFactory(tenant=tenant)
        run = Execution.objects.create(
            tenant=tenant, job=job, status="succeeded", started_at=now, finished_at=now, summary={"match_rate": 0.5}
        )
        Match.objects.create(
            tenant_id=tenant.pk, job_id=job.pk, execution_id=run.pk, pass_name="exact", status="rejected",
            confidence=Decimal("0.9"), left_ids=[1], right_ids=[2], left_amount=Decimal("1"), right_amount=Decimal("1"),
        )  # fmt: skip
        made[name] = (tenant, job)
    for view in ANALYTICS_VIEWS:
        refresh_materialized_view(view.name)
    return made


@pytest.fixture
def viewer_of_a(tenants, client_for):
    return client_for(member(tenants["a"][0], role=TenantMembership.Role.VIEWER))


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_viewer_sees_only_its_tenants_rows_and_the_refresh_time(tenants, viewer_of_a, endpoint):
    tenant_a = tenants["a"][0]

    response = viewer_of_a.get(f"{BASE}/{endpoint}/")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["rows"] and {row["tenant_id"] for row in body["rows"]} == {tenant_a.pk}
    assert body["refreshed_at"] is not None and body["stale"] is False
    assert set(body) == {"view", "refreshed_at", "refresh_every_s", "window_days", "stale", "rows"}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_another_tenant_asked_for_by_id_is_not_found(tenants, viewer_of_a, endpoint):
    response = viewer_of_a.get(f"{BASE}/{endpoint}/", {"tenant": tenants["b"][0].pk})

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_the_own_tenant_can_be_asked_for_by_id(tenants, viewer_of_a):
    response = viewer_of_a.get(f"{BASE}/match-accuracy/", {"tenant": tenants["a"][0].pk})

    assert response.status_code == 200
    assert [row["job_id"] for row in response.json()["rows"]] == [tenants["a"][1].pk]
    assert response.json()["rows"][0]["accuracy"] == 0.0


def test_another_tenants_job_is_not_found(tenants, viewer_of_a):
    assert viewer_of_a.get(f"{BASE}/daily-summary/", {"job": tenants["b"][1].pk}).status_code == 404
    own = viewer_of_a.get(f"{BASE}/daily-summary/", {"job": tenants["a"][1].pk})
    assert own.status_code == 200 and {row["job_id"] for row in own.json()["rows"]} == {tenants["a"][1].pk}


@pytest.mark.parametrize(
    ("endpoint", "params", "field"),
    [
        ("daily-summary", {"tenant": "x"}, "tenant"),
        ("daily-summary", {"job": "0"}, "job"),
        ("daily-summary", {"since": "23/11/2026"}, "since"),
        ("usage-hourly", {"since": "2999-01-01T00:00:00Z"}, "since"),
        ("job-performance", {"tenant": "-1"}, "tenant"),
    ],
)
def test_bad_parameters_are_a_400_naming_the_field(tenants, viewer_of_a, endpoint, params, field):
    response = viewer_of_a.get(f"{BASE}/{endpoint}/", params)

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_usage_since_defaults_to_the_last_24_hours(tenants, viewer_of_a):
    hours = [row["hour"] for row in viewer_of_a.get(f"{BASE}/usage-hourly/").json()["rows"]]

    assert hours
    oldest = datetime.datetime.fromisoformat(hours[0].replace("Z", "+00:00"))
    assert timezone.now() - oldest <= datetime.timedelta(hours=25)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_user_of_no_tenant_is_refused_and_anonymous_is_unauthorized(tenants, client_for, endpoint):
    assert client_for(UserFactory()).get(f"{BASE}/{endpoint}/").status_code == 403
    assert APIClient().get(f"{BASE}/{endpoint}/").status_code in (401, 403)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_each_endpoint_reads_memberships_and_its_view_once(tenants, viewer_of_a, django_assert_num_queries, endpoint):
    viewer_of_a.get(f"{BASE}/{endpoint}/")  # the session is loaded once per request; warm nothing else
    # session, user, memberships, the view (with its refresh time).
    with django_assert_num_queries(4):
        assert viewer_of_a.get(f"{BASE}/{endpoint}/").status_code == 200
