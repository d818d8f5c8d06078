"""Tenant members and their roles, changed by the tenant's admins through the API.

Every change is one audited act. A tenant always keeps at least one admin: the tenant row is
locked while the admins are counted, so two admins demoting each other cannot both succeed.
"""

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from project.activity import activity_record
from reconciliation.models import Tenant, TenantMembership
from reconciliation.workflow.errors import InvalidWorkflowInput, WorkflowConflict

CATEGORY = "reconciliation"
ENTITY = "reconciliation.membership"
Role = TenantMembership.Role


def _audit(action: str, membership: TenantMembership, user, **metadata) -> None:
    activity_record(
        category=CATEGORY,
        action=action,
        user=user,
        entity_type=ENTITY,
        entity_id=membership.pk,
        metadata={"tenant_id": membership.tenant_id, "user_id": membership.user_id, **metadata},
        tenant_id=membership.tenant_id,
    )


def _ensure_another_admin(membership: TenantMembership) -> None:
    Tenant.objects.select_for_update().filter(pk=membership.tenant_id).first()
    others = TenantMembership.objects.filter(tenant_id=membership.tenant_id, role=Role.ADMIN).exclude(pk=membership.pk)
    if not others.exists():
        raise WorkflowConflict(f"User {membership.user_id} is the last admin of tenant {membership.tenant_id}.")


@transaction.atomic
def membership_add(*, tenant: Tenant, username: str, role: str, user=None) -> TenantMembership:
    member = get_user_model().objects.filter(username=username, is_active=True).first()
    if member is None:
        raise InvalidWorkflowInput(f"No active user named {username!r}.")
    try:
        with transaction.atomic():
            membership = TenantMembership.objects.create(tenant=tenant, user=member, role=role)
    except IntegrityError:
        raise WorkflowConflict(f"{username!r} is already a member of tenant {tenant.pk}.") from None
    _audit("member_add", membership, user, role=role)
    return membership


@transaction.atomic
def membership_change_role(*, membership: TenantMembership, role: str, user=None) -> TenantMembership:
    membership = TenantMembership.objects.select_for_update().get(pk=membership.pk)
    was = membership.role
    if was == role:
        return membership
    if was == Role.ADMIN:
        _ensure_another_admin(membership)
    membership.role = role
    membership.save(update_fields=["role"])
    _audit("member_role_change", membership, user, role=role, was=was)
    return membership


@transaction.atomic
def membership_remove(*, membership: TenantMembership, user=None) -> None:
    membership = TenantMembership.objects.select_for_update().get(pk=membership.pk)
    if membership.role == Role.ADMIN:
        _ensure_another_admin(membership)
    _audit("member_remove", membership, user, role=membership.role)
    membership.delete()
