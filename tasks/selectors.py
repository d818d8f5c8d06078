"""Reads of tasks and projects: each selector owns its joins, so a view cannot forget them."""

from django.contrib.postgres.search import SearchQuery, SearchRank
from django.db.models import Count, F, Q, QuerySet
from django.utils import timezone

from tasks.models import Project, Task

BATCH_MAX_IDS = 500


def project_list() -> QuerySet[Project]:
    return Project.objects.select_related("owner")


def task_list() -> QuerySet[Task]:
    # The list never needs the stored search vector; .defer keeps it out of every row fetched.
    return Task.objects.select_related("project", "assignee").defer("search_vector")


def task_search(queryset: QuerySet[Task], text: str) -> QuerySet[Task]:
    """Full-text match on title + description (GIN index), annotated with its rank."""
    query = SearchQuery(text, config="english", search_type="websearch")
    return queryset.filter(search_vector=query).annotate(search_rank=SearchRank(F("search_vector"), query))


def tasks_overdue(queryset: QuerySet[Task], overdue: bool) -> QuerySet[Task]:
    condition = Q(status__in=Task.OPEN_STATUSES, deadline__lt=timezone.now())
    return queryset.filter(condition) if overdue else queryset.exclude(condition)


def tasks_by_ids(ids: list[int]) -> tuple[list[Task], list[int]]:
    """One query for up to BATCH_MAX_IDS tasks, in the order asked; also returns the missing ids."""
    found = {task.pk: task for task in task_list().filter(pk__in=ids)}
    ordered = [found[task_id] for task_id in dict.fromkeys(ids) if task_id in found]
    missing = [task_id for task_id in dict.fromkeys(ids) if task_id not in found]
    return ordered, missing


def task_stats_cache_key(assignee_id: int) -> str:
    return f"tasks:stats:v1:{assignee_id}"


def task_stats(*, assignee_id: int) -> dict:
    """Counts by status and priority plus overdue count, in one query on (assignee, status)."""
    aggregates = {f"status_{value}": Count("id", filter=Q(status=value)) for value in Task.Status.values}
    aggregates |= {f"priority_{value}": Count("id", filter=Q(priority=value)) for value in Task.Priority.values}
    aggregates["overdue"] = Count("id", filter=Q(status__in=Task.OPEN_STATUSES, deadline__lt=timezone.now()))
    aggregates["total"] = Count("id")
    row = Task.objects.filter(assignee_id=assignee_id).aggregate(**aggregates)
    return {
        "assignee": assignee_id,
        "total": row["total"],
        "overdue": row["overdue"],
        "by_status": {value: row[f"status_{value}"] for value in Task.Status.values},
        "by_priority": {value: row[f"priority_{value}"] for value in Task.Priority.values},
    }


def task_stats_cached(*, assignee_id: int, ttl_s: int) -> dict:
    from django.core.cache import cache

    return cache.get_or_set(task_stats_cache_key(assignee_id), lambda: task_stats(assignee_id=assignee_id), ttl_s)
