"""Admin page of the activity log: /admin/activity-log/, newest first, a keyset page at a time.

ActivityLog has a composite primary key (it is partitioned), which Django 5.2's admin cannot
register, so this is a plain view inside the admin site (staff login, admin look). It reads
through the same selector, filters and visibility as GET /api/v1/activity/: superusers read
everything, other staff their own tenants' rows of tenant-scoped categories and every other
row. No COUNT: only "older"/"newer" links.
"""

from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from rest_framework.exceptions import ValidationError

from project.admin import url_with, url_without
from project.api.activity import ActivityFilterSerializer, activity_filters_from
from project.api.pagination import InvalidCursor, TimeWindowPaginator
from project.models import ActivityLog
from project.selectors import ACTIVITY_ORDERING, activity_logs, activity_read_windows, activity_visible_to

PAGE_SIZE = 100
TEMPLATE = "admin/project/activity_log.html"


def activity_log_view(request):
    context = {
        **admin.site.each_context(request),
        "title": "Activity log",
        "filter_names": list(ActivityFilterSerializer().fields),
        "values": {name: request.GET.get(name, "") for name in ActivityFilterSerializer().fields},
        "levels": [value for value, _ in ActivityLog.Level.choices],
        "errors": {},
        "entries": [],
        "page_size": PAGE_SIZE,
    }
    try:
        filters = activity_filters_from(request.GET)
    except ValidationError as exc:
        context["errors"] = exc.detail
        return TemplateResponse(request, TEMPLATE, context, status=400)
    queryset = activity_logs(filters, visible=activity_visible_to(request.user))
    paginator = TimeWindowPaginator(queryset, ACTIVITY_ORDERING, activity_read_windows(filters))
    cursor = request.GET.get("cursor")
    try:
        direction, position = paginator.decode_position(cursor) if cursor else ("n", None)
    except InvalidCursor:
        messages.warning(request, "That page link is not valid; showing the newest entries.")
        return HttpResponseRedirect(url_without(request, "cursor"))
    if direction == "n":
        page = paginator.page(first=PAGE_SIZE, after=position)
    else:
        page = paginator.page(last=PAGE_SIZE, before=position)
    context["entries"] = list(page)
    if page and page.has_next:
        context["older_url"] = url_with(request, cursor=paginator.encode_position(page[-1], "n"))
    if page and page.has_previous:
        context["newer_url"] = url_with(request, cursor=paginator.encode_position(page[0], "p"))
    if cursor:
        context["newest_url"] = url_without(request, "cursor")
    return TemplateResponse(request, TEMPLATE, context)
