"""Admin header items of the approvals app."""

from django import template

from approvals import selectors

register = template.Library()

PENDING_BADGE_PERMISSION = "approvals.view_version"


@register.inclusion_tag("admin/approvals/pending_badge.html", takes_context=True)
def pending_badge(context) -> dict:
    """ "N pending", linking to the pending versions, for staff who may view versions.

    The permission check reads the permissions the admin already loaded for its app list, and the
    number comes from the pending-count cache: no query on a cached page view.
    """
    request = context.get("request")
    user = getattr(request, "user", None)
    # is_staff first: the login page renders for non-staff users too, whose permissions are not loaded.
    if user is None or not (user.is_active and user.is_staff and user.has_perm(PENDING_BADGE_PERMISSION)):
        return {"show": False}
    return {"show": True, "pending": selectors.pending_count_cached()}
