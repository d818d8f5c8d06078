"""What every reconciliation API module shares: the tenant field of bodies, the admin-role check.

Domain errors need nothing here: each declares its HTTP answer (reconciliation/errors.py) and the
project's API exception handler maps it."""

from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied

from reconciliation.api.tenancy import has_role, roles_of
from reconciliation.models import Tenant, TenantMembership

Role = TenantMembership.Role


class TenantField(serializers.PrimaryKeyRelatedField):
    """A tenant id in a body: only the user's own tenants exist here, so another tenant's id and a
    nonexistent one get the same 400 `does_not_exist` (no existence oracle)."""

    def get_queryset(self):
        request = self.context.get("request")
        return Tenant.objects.filter(pk__in=list(roles_of(request.user) if request else ()))


def require_role(user, tenant_id: int, role: str) -> None:
    # A member without the role is forbidden (403), not told their input is wrong (400).
    if not has_role(user, tenant_id, role):
        raise PermissionDenied(f"You need the {role} role in this tenant.")


def require_tenant_admin(user, tenant) -> None:
    require_role(user, tenant.pk, Role.ADMIN)
