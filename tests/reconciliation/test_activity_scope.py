"""Who reads reconciliation acts in the activity log: superusers all, other staff their tenants'."""

import pytest
from django.test import Client

from project.activity import activity_record
from project.models import ActivityLog
from reconciliation.engine.schedule import schedule_set
from reconciliation.engine.services import execution_start, job_create, job_update
from reconciliation.ingest.profiles import source_profile_create
from reconciliation.review.services import exception_resolve
from reconciliation.workflow.casework import exceptions_assign
from tests.factories import UserFactory
from tests.reconciliation.factories import JobFactory, TenantFactory, load, member
from tests.reconciliation.test_profiles import GERMAN
from tests.reconciliation.test_workflow_exceptions import exceptions_of

pytestmark = pytest.mark.django_db

API = "/api/v1/activity/"
ADMIN = "/admin/activity-log/"


@pytest.fixture
def two_tenants():
    """Tenant A and B with one act each, plus a task act (no tenant)."""
    tenant_a, tenant_b = TenantFactory(), TenantFactory()
    job_a = job_create(tenant=tenant_a, name="A bank vs ledger")
    job_b = job_create(tenant=tenant_b, name="B bank vs ledger")
    activity_record(category="tasks", action="task_create", entity_type="tasks.task", entity_id=1)
    return tenant_a, tenant_b, job_a, job_b


def staff_member_of(tenant):
    user = member(tenant)
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    return user


def api_rows(user) -> list[tuple[str, str]]:
    client = Client()
    client.force_login(user)
    response = client.get(API, {"page_size": 100})
    assert response.status_code == 200, response.content[:200]
    return sorted((row["action"], row["entity_id"]) for row in response.json()["results"])


def test_staff_read_their_tenants_reconciliation_acts_and_every_other_act(two_tenants):
    tenant_a, _, job_a, job_b = two_tenants
    rows = api_rows(staff_member_of(tenant_a))
    assert ("job_create", str(job_a.pk)) in rows
    assert ("job_create", str(job_b.pk)) not in rows  # another tenant's
    assert ("task_create", "1") in rows  # not a tenant-scoped category


def test_superusers_read_every_tenant(two_tenants):
    _, _, job_a, job_b = two_tenants
    rows = api_rows(UserFactory(is_staff=True, is_superuser=True))
    assert {("job_create", str(job_a.pk)), ("job_create", str(job_b.pk))} <= set(rows)


def test_staff_of_no_tenant_read_no_reconciliation_act(two_tenants):
    rows = api_rows(UserFactory(is_staff=True))
    assert rows == [("task_create", "1")]


def test_people_who_are_not_staff_read_nothing():
    tenant = TenantFactory()
    client = Client()
    client.force_login(member(tenant))  # a tenant member, but not staff
    assert client.get(API).status_code == 403
    assert client.get(ADMIN).status_code == 302  # to the admin login


def test_the_admin_page_scopes_the_same_way(two_tenants):
    tenant_a, _, job_a, job_b = two_tenants
    client = Client()
    client.force_login(staff_member_of(tenant_a))
    entries = client.get(ADMIN).context["entries"]
    assert {(entry.action, entry.entity_id) for entry in entries} >= {("job_create", str(job_a.pk))}
    assert ("job_create", str(job_b.pk)) not in {(entry.action, entry.entity_id) for entry in entries}


def test_every_reconciliation_act_names_the_tenant_it_touched():
    tenant = TenantFactory()
    user = staff_member_of(tenant)
    job = job_create(tenant=tenant, name="Bank vs ledger", user=user)
    job_update(job=job, user=user, name="Renamed")
    schedule_set(job=job, crontab="0 6 * * *", user=user)
    source_profile_create(tenant=tenant, name="Bank CSV", user=user, **GERMAN)
    load(job, "left", [("L1", "10.00", "EUR", "2026-11-02", "INV-1", "ACME")])
    execution_start(job=job, user=user)

    rows = ActivityLog.objects.filter(category="reconciliation")
    assert rows.count() >= 6
    assert set(rows.values_list("tenant_id", flat=True)) == {tenant.pk}


def test_a_bulk_act_across_tenants_is_read_by_superusers_only():
    """One activity row per act: an act spanning two tenants belongs to neither."""
    tenant_a, tenant_b = TenantFactory(), TenantFactory()
    exceptions = [exceptions_of(JobFactory(tenant=tenant), 1)[0] for tenant in (tenant_a, tenant_b)]
    exceptions_assign(ids=[e.id for e in exceptions], tenant_ids=[tenant_a.pk, tenant_b.pk], assignee_id=None)
    row = ActivityLog.objects.get(action="exception_unassign")
    assert row.tenant_id is None
    assert ("exception_unassign", "") not in api_rows(staff_member_of(tenant_a))
    assert ("exception_unassign", "") in api_rows(UserFactory(is_staff=True, is_superuser=True))

    exception_resolve(exception_id=exceptions[0].id, tenant_ids=[tenant_a.pk], note="booked elsewhere")
    assert ActivityLog.objects.get(action="unmatched_resolve").tenant_id == tenant_a.pk
