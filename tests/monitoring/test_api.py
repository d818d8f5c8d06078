"""/api/v1/database/performance/*: admins only, the documented shapes, 400 on bad parameters."""

import pytest
import yaml
from django.core.management import call_command
from rest_framework.test import APIClient

from tests.approvals.factories import VersionFactory
from tests.conftest import grant
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

BASE = "/api/v1/database/performance/"
ENDPOINTS = {
    "pool-stats": {"application", "pgbouncer"},
    "database-stats": {"database", "connections", "largest_tables", "sequences", "wraparound"},
    "index-usage": {"stats_since", "indexes", "missing_index_tables", "thresholds", "pgstattuple_installed"},
    "cache-stats": {"table", "index", "table_blocks", "index_blocks", "threshold", "performance_assessment"},
    "table-bloat": None,  # a list
    "slow-queries": {"available", "statements", "by_origin"},
    "partitions": {"partitioned_tables", "materialized_views"},
    "system-metrics": {"cpu_percent", "memory_percent", "load_average", "process"},
    "backlog": {"approvals", "queues", "workers", "beat_jobs", "reconciliation"},
    "full-report": {"timestamp", "services", "figures", "data", "recommendations"},
    "request-latency": {"hours", "routes"},
    "retention": {"last_run_at", "tables"},
}


@pytest.fixture
def admin_api(viewer):
    client = APIClient()
    client.force_login(viewer)
    return client


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_endpoint_answers_admins_with_its_shape(endpoint, admin_api):
    VersionFactory.create_batch(2)
    response = admin_api.get(BASE + endpoint)
    assert response.status_code == 200, response.content
    body = response.json()
    if ENDPOINTS[endpoint] is None:
        assert isinstance(body, list) and {"table", "bloat_ratio", "dead_rows"} <= set(body[0])
    else:
        assert ENDPOINTS[endpoint] <= set(body)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_endpoint_refuses_non_admins(endpoint, client_for):
    assert APIClient().get(BASE + endpoint).status_code in (401, 403)
    # Staff without the cockpit permission, and a non-staff user with it, are both refused.
    assert client_for(UserFactory(is_staff=True)).get(BASE + endpoint).status_code == 403
    assert client_for(grant(UserFactory(), "monitoring.view_dashboard")).get(BASE + endpoint).status_code == 403


def test_full_report_has_the_recommendations_of_the_platform_report(admin_api):
    VersionFactory.create_batch(60)  # over the guide's alert level of 50
    report = admin_api.get(BASE + "full-report").json()
    assert {"category", "severity", "message", "action"} <= set(report["recommendations"][0])
    pending = [r for r in report["recommendations"] if r["message"].startswith("Pending approvals is 60")]
    assert pending and pending[0]["severity"] == "critical"
    assert {f["key"] for f in report["figures"]} >= {"pool_usage", "cache_hit_table", "pending_backlog", "queue_depth"}


def test_backlog_counts_pending_approvals(admin_api):
    VersionFactory.create_batch(3)
    approvals = admin_api.get(BASE + "backlog").json()["approvals"]
    assert approvals["count"] == 3
    assert approvals["oldest_age_s"] >= approvals["p50_age_s"] >= 0


def test_request_latency_is_per_route_over_the_asked_window(admin_api):
    from django.utils import timezone

    from monitoring.history import samples_from_figures
    from monitoring.models import MetricSample

    routes = {"tasks.list": {"requests": 7, "p95_ms": 12.0}}
    MetricSample.objects.bulk_create(samples_from_figures({"requests": {"routes": routes}}, timezone.now()))
    body = admin_api.get(BASE + "request-latency", {"hours": 2}).json()
    assert body["hours"] == 2
    assert [(r["route"], r["requests"], r["p95_ms"]) for r in body["routes"]] == [("tasks.list", 7, 12.0)]
    response = admin_api.get(BASE + "request-latency", {"hours": "0"})
    assert response.status_code == 400 and "hours" in response.json()["error"]["fields"]


@pytest.mark.parametrize(
    "params,field", [({"order": "slowest"}, "order"), ({"window": "1y"}, "window"), ({"limit": "0"}, "limit")]
)
def test_slow_queries_rejects_bad_parameters_with_400(params, field, admin_api):
    response = admin_api.get(BASE + "slow-queries", params)
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


@pytest.mark.usefixtures("with_pg_stat_statements")
def test_slow_queries_over_a_window_come_from_the_snapshots(admin_api):
    from monitoring.history import snapshot_counters

    snapshot_counters()
    body = admin_api.get(BASE + "slow-queries", {"window": "1h", "order": "calls"}).json()
    assert body["available"] and body["window"] == "1h"
    assert all("new_in_window" in s for s in body["statements"])


def test_every_endpoint_shape_is_in_the_openapi_schema(tmp_path):
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    schema = yaml.safe_load(target.read_text())
    for endpoint in ENDPOINTS:
        operation = schema["paths"][BASE + endpoint]["get"]
        content = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert "$ref" in content or content.get("type") == "array"
    components = schema["components"]["schemas"]
    assert {"flags", "model", "source", "fix_migration"} <= set(components["Index"]["properties"])
    assert {"category", "severity", "message", "action"} <= set(components["Recommendation"]["properties"])
