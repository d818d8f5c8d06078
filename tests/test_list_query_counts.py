"""Every list endpoint of every router runs a constant number of queries: the same for a page of
one row as for a page of several. The endpoints are found by walking the URLconf (each router's
`list` route), so a new router or viewset is covered without being named here.

The world is the apps' own demo seeders (`project.seeding`) plus the rows no seeder writes; each
endpoint must show at least two rows, or the comparison could not catch a query per row.
"""

from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient

from project.activity import activity_record
from project.seeding import registered_seeders

SEED_ROWS = 40  # the reconciliation demo has exceptions from 20 pairs on
BIG_PAGE = 5


def _walk(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern


def list_endpoints() -> list[tuple[str, str]]:
    """(URL name, path) of every router `list` route (format-suffix twins left out)."""
    found = {}
    for route, pattern in _walk(get_resolver().url_patterns):
        actions = getattr(pattern.callback, "actions", None) or {}
        if actions.get("get") == "list" and "<format>" not in route and "(?P<format>" not in route:
            path = "/" + route.replace("^", "").replace("$", "")
            found[pattern.name] = path
    return sorted(found.items())


ENDPOINTS = list_endpoints()


def _rows_no_seeder_writes(user) -> None:
    now = timezone.now()
    # More than a big page: the activity reader asks month windows until its page is full, so a
    # page that reaches the end of the log costs one query per window (tested in test_activity_reader).
    for number in range(BIG_PAGE + 2):
        activity_record(category="tests", action="query_count", user=user, entity_type="tests.row", entity_id=number)
    # Approvals: rules and the automation's audit log.
    rule_model = apps.get_model("approvals", "ApprovalRule")
    rules = [
        rule_model.objects.create(name=f"Rule {n}", action="approve", conditions={"field": "content_length",
                                  "op": "lt", "value": 100})
        for n in range(3)
    ]  # fmt: skip
    audit = apps.get_model("approvals", "AutomationAuditLog")
    version_ids = list(apps.get_model("approvals", "Version").objects.values_list("id", flat=True)[:3])
    audit.objects.bulk_create(
        audit(rule_id=rules[0].pk, rule_revision=1, version_id=vid, decision="approve", reason="test", duration_ms=1.0)
        for vid in version_ids
    )
    # Approvals: the user's notification subscriptions (the endpoint lists one's own).
    subscription_model = apps.get_model("approvals", "NotificationSubscription")
    subscription_model.objects.create(user=user, kind="backlog", pending_above=100)
    subscription_model.objects.create(user=user, kind="automation_skips", skips_above=3)
    # Reconciliation: a second tenant of the user's with a job, a second execution, webhook
    # endpoints and deliveries of the demo tenant.
    tenant_model = apps.get_model("reconciliation", "Tenant")
    tenant = tenant_model.objects.order_by("id").first()
    other = tenant_model.objects.create(name="Second Ltd", slug="second")
    apps.get_model("reconciliation", "TenantMembership").objects.create(tenant=other, user=user, role="admin")
    job_model = apps.get_model("reconciliation", "ReconciliationJob")
    job_model.objects.create(tenant=other, name="Cards vs ledger")
    apps.get_model("reconciliation", "Execution").objects.create(tenant=tenant, job=job_model.objects.first())
    # The workflow's schedules (one per job) and periods, and source profiles (issue 14).
    for number, job in enumerate(job_model.objects.order_by("id")[:2]):
        apps.get_model("reconciliation", "JobSchedule").objects.create(
            job=job, tenant_id=job.tenant_id, crontab="0 6 * * *"
        )
        apps.get_model("reconciliation", "SourceProfile").objects.create(tenant_id=job.tenant_id, name=f"Bank {number}")
        for month in (1, 2):
            apps.get_model("reconciliation", "Period").objects.create(
                tenant_id=job.tenant_id, job=job, starts_on=f"2026-0{month}-01", ends_on=f"2026-0{month}-28"
            )
    endpoint_model = apps.get_model("reconciliation", "WebhookEndpoint")
    delivery_model = apps.get_model("reconciliation", "WebhookDelivery")
    for number in range(3):
        endpoint = endpoint_model.objects.create(
            tenant=tenant, url=f"https://hooks{number}.example.com/x", secret="s", events=["execution.completed"]
        )
        delivery_model.objects.create(
            endpoint=endpoint,
            tenant=tenant,
            event="execution.completed",
            payload={"id": number},
            next_attempt_at=now + timedelta(hours=1),
        )


@pytest.fixture
def superuser_client(db, settings) -> APIClient:
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    user = get_user_model().objects.create_superuser("query-counter", "qc@example.com", "x")
    for seeder in registered_seeders().values():
        seeder.seed(SEED_ROWS, lambda done: None)
    _rows_no_seeder_writes(user)
    client = APIClient()
    client.force_authenticate(user)
    return client


def _page(client, path: str, size: int) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path, {"page_size": size})
    assert response.status_code == 200, (path, response.content[:300])
    body = response.json()
    rows = body["results"] if isinstance(body, dict) else body
    return len(queries), len(rows)


def test_the_walk_finds_the_list_route_of_every_router():
    names = {name for name, _ in ENDPOINTS}
    assert {"task-list", "project-list", "approvals-version-list", "activity-list"} <= names
    assert len(ENDPOINTS) >= 14


@pytest.mark.parametrize(("name", "path"), ENDPOINTS, ids=[name for name, _ in ENDPOINTS])
def test_a_list_page_costs_the_same_queries_for_one_row_as_for_several(name, path, superuser_client):
    # Warm per-process caches (content types, the active rule) with a third page size: a list
    # that caches its responses then answers neither measured page from that cache.
    _page(superuser_client, path, 3)

    one_queries, one_rows = _page(superuser_client, path, 1)
    many_queries, many_rows = _page(superuser_client, path, BIG_PAGE)

    assert (one_rows, many_rows >= 2) == (1, True), f"{path}: seed at least two rows to compare"
    assert many_queries == one_queries, f"{path}: {one_queries} queries for 1 row, {many_queries} for {many_rows}"
