"""Tenant members through the API: admins add, re-role and remove them; every change audited."""

import pytest
from django.urls import reverse

from project.models import ActivityLog
from reconciliation.models import TenantMembership
from tests.factories import UserFactory
from tests.reconciliation.factories import TenantFactory, member

pytestmark = pytest.mark.django_db
Role = TenantMembership.Role


def test_an_admin_adds_a_member_by_username_and_it_is_audited(client_for):
    tenant = TenantFactory()
    admin = member(tenant, Role.ADMIN)
    newcomer = UserFactory(username="ana")

    response = client_for(admin).post(
        reverse("recon-member-list"), {"tenant": tenant.pk, "username": "ana", "role": "operator"}, format="json"
    )

    assert response.status_code == 201, response.content
    assert response.json()["username"] == "ana"
    membership = TenantMembership.objects.get(tenant=tenant, user=newcomer)
    assert membership.role == Role.OPERATOR
    log = ActivityLog.objects.get(action="member_add")
    assert (log.user_id, log.entity_id) == (admin.pk, str(membership.pk))
    assert log.metadata == {"tenant_id": tenant.pk, "user_id": newcomer.pk, "role": "operator"}


def test_operators_cannot_manage_members(client_for):
    tenant = TenantFactory()
    operator = member(tenant, Role.OPERATOR)
    UserFactory(username="bo")
    client = client_for(operator)
    viewer = TenantMembership.objects.get(user=member(tenant, Role.VIEWER))

    add = client.post(reverse("recon-member-list"), {"tenant": tenant.pk, "username": "bo"}, format="json")
    patch = client.patch(reverse("recon-member-detail", kwargs={"pk": viewer.pk}), {"role": "admin"}, format="json")
    delete = client.delete(reverse("recon-member-detail", kwargs={"pk": viewer.pk}))

    assert (add.status_code, patch.status_code, delete.status_code) == (403, 403, 403)
    assert TenantMembership.objects.filter(tenant=tenant).count() == 2
    assert not ActivityLog.objects.filter(action__startswith="member_").exists()


def test_unknown_username_is_400_and_a_second_membership_is_409(client_for):
    tenant = TenantFactory()
    admin = member(tenant, Role.ADMIN)
    client = client_for(admin)

    unknown = client.post(reverse("recon-member-list"), {"tenant": tenant.pk, "username": "nobody"}, format="json")
    twice = client.post(reverse("recon-member-list"), {"tenant": tenant.pk, "username": admin.username}, format="json")

    assert unknown.status_code == 400
    assert "nobody" in unknown.json()["error"]["message"] + str(unknown.json()["error"].get("fields"))
    assert twice.status_code == 409


def test_role_change_and_removal_are_audited_with_what_was(client_for):
    tenant = TenantFactory()
    admin = member(tenant, Role.ADMIN)
    other = TenantMembership.objects.get(user=member(tenant, Role.VIEWER))
    client = client_for(admin)

    changed = client.patch(reverse("recon-member-detail", kwargs={"pk": other.pk}), {"role": "admin"}, format="json")
    removed = client.delete(reverse("recon-member-detail", kwargs={"pk": other.pk}))

    assert changed.status_code == 200 and changed.json()["role"] == "admin"
    assert removed.status_code == 204
    assert not TenantMembership.objects.filter(pk=other.pk).exists()
    change = ActivityLog.objects.get(action="member_role_change")
    assert (change.metadata["was"], change.metadata["role"]) == ("viewer", "admin")
    assert ActivityLog.objects.get(action="member_remove").metadata["role"] == "admin"


def test_the_last_admin_can_be_neither_demoted_nor_removed(client_for):
    tenant = TenantFactory()
    admin = member(tenant, Role.ADMIN)
    own = TenantMembership.objects.get(user=admin)
    client = client_for(admin)

    demote = client.patch(reverse("recon-member-detail", kwargs={"pk": own.pk}), {"role": "viewer"}, format="json")
    remove = client.delete(reverse("recon-member-detail", kwargs={"pk": own.pk}))

    assert (demote.status_code, remove.status_code) == (409, 409)
    assert TenantMembership.objects.get(pk=own.pk).role == Role.ADMIN


def test_an_admin_cannot_add_members_to_another_tenant(client_for):
    mine, theirs = TenantFactory(), TenantFactory()
    admin = member(mine, Role.ADMIN)
    UserFactory(username="cy")

    response = client_for(admin).post(
        reverse("recon-member-list"), {"tenant": theirs.pk, "username": "cy"}, format="json"
    )

    assert response.status_code == 400  # another tenant's id does not exist here
    assert not TenantMembership.objects.filter(tenant=theirs).exists()


def test_member_list_is_one_query_set_whatever_its_length(client_for, django_assert_num_queries):
    tenant = TenantFactory()
    admin = member(tenant, Role.ADMIN)
    client = client_for(admin)
    client.get(reverse("recon-member-list"))
    for _ in range(5):
        member(tenant, Role.VIEWER)

    with django_assert_num_queries(4):  # session, user, memberships of the user, the page
        response = client.get(reverse("recon-member-list"))

    assert len(response.json()["results"]) == 6
