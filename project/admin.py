import json
from datetime import UTC

from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.translation import gettext as _

from project.adminlogin import ThrottledAdminLoginForm

# ActivityLog has a composite primary key (it is partitioned), which Django 5.2's admin cannot
# register; it is read at /admin/activity-log/ (project.admin_activity) and GET /api/v1/activity/.
from project.models import JobRun, MaterializedViewRefresh


def url_with(request, **params) -> str:
    """This admin page's URL with `params` set, the other query parameters (filters) kept."""
    query = request.GET.copy()
    for name, value in params.items():
        query[name] = value
    return f"{request.path}?{query.urlencode()}"


def url_without(request, name: str) -> str:
    """This admin page's URL without the query parameter `name` (back to the first page)."""
    query = request.GET.copy()
    query.pop(name, None)
    return f"{request.path}?{query.urlencode()}" if query else request.path


admin.site.site_header = "Opsdeck"
admin.site.site_title = "Opsdeck admin"
admin.site.index_title = "Operations"
# Wrong passwords are counted per address and username; past the limit, logins wait (settings).
admin.site.login_form = ThrottledAdminLoginForm


class EstimatedCountPaginator(Paginator):
    """Admin paginator that never COUNT(*)s a big table, filtered or not.

    Unfiltered, it reads PostgreSQL's row estimate (pg_class.reltuples, kept by ANALYZE and
    autovacuum). Filtered, it counts exactly up to EXACT_COUNT_LIMIT rows; past that it reads
    the planner's estimate for the filtered query. A filter can keep most of a table (versions
    with status=pending at 1M rows: an exact count took 120 ms of each 180 ms page view), and
    beyond ten thousand rows nobody pages to the end to check the total.
    """

    EXACT_COUNT_LIMIT = 10_000

    @cached_property
    def count(self) -> int:
        queryset = self.object_list.order_by()
        if not queryset.query.where:
            estimate = self._table_estimate()
            # A never-analyzed table reports -1/0: then its real count is cheap.
            if estimate > self.EXACT_COUNT_LIMIT:
                return estimate
        # Django counts a sliced queryset as SELECT COUNT(*) FROM (... LIMIT n): it stops early.
        bounded = queryset[: self.EXACT_COUNT_LIMIT + 1].count()
        if bounded <= self.EXACT_COUNT_LIMIT:
            return bounded
        return max(bounded, self._planner_estimate(queryset))

    def _table_estimate(self) -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT GREATEST(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass",
                [self.object_list.model._meta.db_table],
            )
            row = cursor.fetchone()
        return row[0] if row else 0

    @staticmethod
    def _planner_estimate(queryset) -> int:
        plan = json.loads(queryset.explain(format="json"))
        return int(plan[0]["Plan"]["Plan Rows"])


class SkipScanDatesMixin:
    """`QuerySet.datetimes()` as an index skip scan, for the admin's date hierarchy.

    Django answers the date hierarchy with `SELECT DISTINCT date_trunc(...)` over every row
    (0.4 s on a million tasks). This finds the same buckets by jumping from one to the next
    with `min(field) WHERE field >= next bucket`, one index probe per bucket, in one statement.
    """

    STEPS = {"year": "1 year", "month": "1 month", "day": "1 day"}

    def datetimes(self, field_name, kind, order="ASC", tzinfo=None):
        # Buckets are cut in UTC: fall back to Django wherever another time zone is in force.
        in_utc = tzinfo in (None, UTC) and timezone.get_current_timezone_name() == "UTC"
        if kind not in self.STEPS or not in_utc:
            return super().datetimes(field_name, kind, order, tzinfo)
        inner, inner_params = self.order_by().values(field_name).query.sql_with_params()
        column = connection.ops.quote_name(field_name)
        sql = f"""
            WITH RECURSIVE buckets(bucket) AS (
                SELECT date_trunc(%s, min(s.{column}) AT TIME ZONE 'UTC') FROM ({inner}) AS s
                UNION ALL
                SELECT (
                    SELECT date_trunc(%s, min(s.{column}) AT TIME ZONE 'UTC') FROM ({inner}) AS s
                    WHERE s.{column} >= (b.bucket + %s::interval) AT TIME ZONE 'UTC'
                )
                FROM buckets AS b WHERE b.bucket IS NOT NULL
            )
            SELECT bucket AT TIME ZONE 'UTC' FROM buckets WHERE bucket IS NOT NULL
            ORDER BY 1 {"DESC" if order == "DESC" else "ASC"}
        """
        params = [kind, *inner_params, kind, *inner_params, self.STEPS[kind]]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return [row[0] for row in cursor.fetchall()]


class BigTableChangeList(ChangeList):
    """Django's ChangeList with each row's link built without a URL resolve and reverse per row.

    Django passes every row's change URL through add_preserved_filters, which resolves it only
    to learn that it is not the changelist's own URL, and reverses each URL from scratch: a
    quarter of a filtered 100-row page's row rendering. The same links: the change URL is
    reversed once with a placeholder, and the filters' query string appended here.
    """

    _PK_PLACEHOLDER = "__opsdeck_pk__"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Read by add_preserved_filters for the row links only (Django's admin_list).
        self.row_link_query, self.preserved_filters = self.preserved_filters, ""
        self._change_url_template = reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
            args=(self._PK_PLACEHOLDER,),
            current_app=self.model_admin.admin_site.name,
        )

    def get_queryset(self, request, exclude_parameters=None):
        queryset = super().get_queryset(request, exclude_parameters)
        return queryset.defer(*self.model_admin.changelist_defer) if self.model_admin.changelist_defer else queryset

    def url_for_result(self, result) -> str:
        url = self._change_url_template.replace(self._PK_PLACEHOLDER, str(quote(getattr(result, self.pk_attname))), 1)
        return f"{url}?{self.row_link_query}" if self.row_link_query else url


class BigTableAdmin(admin.ModelAdmin):
    """Admin for tables that grow without bound: no full COUNT, no full-table DISTINCT."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    # Columns the changelist never shows and that can be large (text bodies): not fetched for
    # its 50-100 rows. The change page still reads them.
    changelist_defer: tuple[str, ...] = ()

    def get_changelist(self, request, **kwargs):
        return BigTableChangeList

    def action_checkbox(self, obj):
        # Django renders a CheckboxInput widget through the template engine for every row: a
        # third of a 100-row changelist's rendering. Same markup, formatted directly
        # (tests/tasks/test_admin.py holds it equal to Django's).
        label = format_html(_("Select this object for an action - {}"), str(obj))
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            helpers.ACTION_CHECKBOX_NAME,
            str(obj.pk),
            label,
        )

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if self.date_hierarchy:
            # Same rows, same results; only datetimes() is answered through the index.
            queryset.__class__ = type(
                "SkipScanDates" + type(queryset).__name__, (SkipScanDatesMixin, type(queryset)), {}
            )
        return queryset


@admin.register(JobRun)
class JobRunAdmin(BigTableAdmin):
    list_display = ["name", "status", "started_at", "duration_ms", "celery_id"]
    list_filter = ["status", "name"]
    search_fields = ["name", "celery_id"]
    date_hierarchy = "started_at"
    ordering = ["-started_at"]
    readonly_fields = [field.name for field in JobRun._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(MaterializedViewRefresh)
class MaterializedViewRefreshAdmin(BigTableAdmin):
    """Refresh history, written by project.matviews; read-only like JobRun."""

    list_display = ["view_name", "status", "started_at", "duration_ms", "concurrently"]
    list_filter = ["status", "view_name"]
    date_hierarchy = "started_at"
    ordering = ["-started_at"]
    readonly_fields = [field.name for field in MaterializedViewRefresh._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
