"""Tenant isolation: the one mechanism every reconciliation endpoint goes through.

`TenantScopedViewSet.get_queryset()` filters by the tenants the user belongs to before a view
sees a row, so another tenant's object is a 404 and never appears in a list. Roles are ordered
(viewer < operator < admin); an action needs the role named in `role_for_action` in the tenant of
the object it touches (403 if the user belongs to the tenant with too small a role).
"""

from django.db.models import QuerySet
from rest_framework import permissions, viewsets

from reconciliation.models import TenantMembership

ROLE_RANK = {TenantMembership.Role.VIEWER: 1, TenantMembership.Role.OPERATOR: 2, TenantMembership.Role.ADMIN: 3}
READ_ACTIONS = {"list", "retrieve", "report"}


def roles_of(user) -> dict[int, str]:
    """{tenant_id: role} for `user` (one query, then cached on the user object for the request)."""
    if not (user and user.is_authenticated):
        return {}
    cached = getattr(user, "_tenant_roles", None)
    if cached is None:
        cached = dict(TenantMembership.objects.filter(user=user).values_list("tenant_id", "role"))
        user._tenant_roles = cached
    return cached


def tenant_ids_with_role(user, minimum: str = TenantMembership.Role.VIEWER) -> list[int]:
    return sorted(tenant for tenant, role in roles_of(user).items() if ROLE_RANK[role] >= ROLE_RANK[minimum])


def has_role(user, tenant_id: int, minimum: str) -> bool:
    role = roles_of(user).get(tenant_id)
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[minimum]


class TenantRolePermission(permissions.BasePermission):
    """Authenticated and a member of at least one tenant; per object, the action's role in its tenant."""

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated and roles_of(request.user))

    def has_object_permission(self, request, view, obj):
        return has_role(request.user, obj.tenant_id, view.required_role())


class TenantScopedViewSet(viewsets.GenericViewSet):
    """Base of every reconciliation viewset: subclasses define `scoped_queryset(tenant_ids)`."""

    permission_classes = [TenantRolePermission]
    # Role needed per action; reads default to viewer, anything else to operator.
    role_for_action: dict[str, str] = {}

    def required_role(self) -> str:
        # Reading is a viewer's right on every action, whatever the action writes on POST.
        if self.action in READ_ACTIONS or self.request.method in permissions.SAFE_METHODS:
            return TenantMembership.Role.VIEWER
        return self.role_for_action.get(self.action, TenantMembership.Role.OPERATOR)

    def tenant_ids(self) -> list[int]:
        return tenant_ids_with_role(self.request.user)

    def get_queryset(self) -> QuerySet:
        # Every subclass defines scoped_queryset(tenant_ids): how its rows are read, tenant first.
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular builds the schema
            return self.queryset
        return self.scoped_queryset(self.tenant_ids())
