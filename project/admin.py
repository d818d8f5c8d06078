from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connection
from django.utils.functional import cached_property

# ActivityLog has a composite primary key (it is partitioned), which Django 5.2's admin cannot
# register; it is read through the API and the monitoring pages instead.
from project.models import JobRun


class EstimatedCountPaginator(Paginator):
    """Admin paginator that never COUNT(*)s a whole big table.

    Unfiltered, it reads PostgreSQL's row estimate (pg_class.reltuples, kept by ANALYZE and
    autovacuum); filtered lists are counted exactly, since filters keep them small.
    """

    @cached_property
    def count(self) -> int:
        query = self.object_list.query
        if not query.where:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT GREATEST(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass",
                    [self.object_list.model._meta.db_table],
                )
                row = cursor.fetchone()
            # A never-analyzed table reports -1/0: then its real count is cheap.
            if row and row[0] > 10_000:
                return row[0]
        return super().count


class BigTableAdmin(admin.ModelAdmin):
    paginator = EstimatedCountPaginator
    show_full_result_count = False


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

