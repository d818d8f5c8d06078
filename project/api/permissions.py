"""Django model permissions on every viewset, reads included."""

from rest_framework.permissions import DjangoModelPermissions


class ModelPermissions(DjangoModelPermissions):
    """Like DRF's, but reading needs `view_<model>` too: nobody reads data that is not theirs to read.

    Anonymous requests are refused (401) before any permission is looked at.
    """

    perms_map = {
        **DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
    }

    def has_permission(self, request, view):
        # An action may name the permissions it needs (e.g. approve -> approvals.decide_version).
        required = getattr(view, "action_permissions", {}).get(getattr(view, "action", None))
        if required is not None:
            if not (request.user and request.user.is_authenticated):
                return False
            return request.user.has_perms(required)
        # Actions that only read but take a POST body (e.g. a batch of ids) need view_<model>.
        if getattr(view, "action", None) in getattr(view, "read_only_actions", ()):
            request_method, request.method = request.method, "GET"
            try:
                return super().has_permission(request, view)
            finally:
                request.method = request_method
        return super().has_permission(request, view)
