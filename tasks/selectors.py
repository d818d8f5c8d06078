"""Reads of tasks and projects: each selector owns its joins, so a view cannot forget them."""

import re
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.contrib.postgres.search import SearchQuery, SearchRank
from django.db import connection, transaction
from django.db.models import BigIntegerField, Count, ExpressionWrapper, F, FloatField, Q, QuerySet, Subquery
from django.db.models.functions import Cast
from django.utils import timezone

from project.db.expressions import InArray
from tasks.models import Project, Task

BATCH_MAX_IDS = 500


def project_list() -> QuerySet[Project]:
    return Project.objects.select_related("owner")


def task_list() -> QuerySet[Task]:
    # The list never needs the stored search vector; .defer keeps it out of every row fetched.
    # No select_related: the API renders project and assignee as ids (project_id, assignee_id),
    # so joining tasks_project and auth_user (password hash included) only fetched unused columns.
    return Task.objects.defer("search_vector")


# What the API renders of a task (api.TaskSerializer's fields), and the columns that hold it:
# project and assignee are rendered as their ids (project -> project_id).
TASK_API_FIELDS = (
    "id",
    "project",
    "title",
    "description",
    "assignee",
    "status",
    "priority",
    "deadline",
    "tags",
    "created_at",
    "updated_at",
    "completed_at",
)
TASK_ROW_FIELDS = tuple(Task._meta.get_field(name).attname for name in TASK_API_FIELDS)


def task_rows() -> QuerySet[Task]:
    """task_list() as dicts of TASK_ROW_FIELDS, for the API's reads (list, detail, batch).

    Building a model instance per row was the largest part of a 50-row page's CPU
    (bench/results/profile-*.txt); the API only renders these columns.
    """
    return Task.objects.values(*TASK_ROW_FIELDS)


# `invoi*`: a word ending in * matches every word starting with it (search as you type).
_PREFIX_WORD = re.compile(r"(?<!\S)([^\W_]+)\*(?!\S)")


def task_search_query(text: str) -> SearchQuery:
    """websearch syntax ("quoted phrase", or, -not) plus `word*` prefixes, as one tsquery."""
    prefixes = _PREFIX_WORD.findall(text)
    rest = _PREFIX_WORD.sub(" ", text).strip()
    # The prefix stem is letters/digits only (the regex), so quoting it cannot inject syntax.
    parts = [SearchQuery(f"'{stem.lower()}':*", config="english", search_type="raw") for stem in prefixes]
    if rest or not parts:
        parts.insert(0, SearchQuery(rest, config="english", search_type="websearch"))
    query = parts[0]
    for part in parts[1:]:
        query &= part
    return query


def task_search(queryset: QuerySet[Task], text: str) -> QuerySet[Task]:
    """Full-text match on title + description, ranked within a bounded candidate set.

    Ranking every match of a common word (100,000+ rows at 1M tasks) cost seconds, so only
    TASK_SEARCH_CANDIDATES_MAX matches are ranked. They are the newest matches when the newest
    TASK_SEARCH_RECENT_WINDOW tasks hold that many (a common word: found by walking the primary
    key back from the newest task, 2 ms); otherwise those newest matches plus the first the GIN
    index finds (a rare word: the index costs what its few matches cost). The GIN index alone
    spent 12 ms on a common word and 24 ms on a prefix building a bitmap of all 125,000
    matches (bench/results/load-*.txt). `queryset` carries the request's other filters, so
    candidates are chosen among rows that pass them. Run it inside `task_search_plan()`.
    """
    query = task_search_query(text)
    limit = settings.TASK_SEARCH_CANDIDATES_MAX
    newest = _newest_matches(queryset, query, limit)
    candidates = InArray("pk", newest)
    if len(newest) < limit:
        # One IN over a UNION, not `id = ANY(...) OR id IN (...)`: PostgreSQL cannot serve an OR
        # of two subplans from an index and filtered all 1M rows (160 ms for a rare word).
        indexed = queryset.filter(search_vector=query).order_by().values("pk")[:limit]
        candidates = Q(pk__in=queryset.filter(candidates).order_by().values("pk").union(indexed))
    # ts_rank is a float4, whose text form ("0.0607927") does not round-trip through a Python
    # float: a cursor on a tied rank then skipped rows. As float8 the cursor's value is exact.
    rank = Cast(SearchRank(F("search_vector"), query), output_field=FloatField())
    return queryset.filter(candidates).annotate(search_rank=rank)


def _newest_matches(queryset: QuerySet[Task], query: SearchQuery, limit: int) -> list[int]:
    with task_search_recent_plan():
        return list(task_search_recent_matches(queryset, query).values_list("pk", flat=True)[:limit])


def task_search_recent_matches(queryset: QuerySet[Task], query: SearchQuery) -> QuerySet[Task]:
    """Matches among the newest TASK_SEARCH_RECENT_WINDOW tasks, newest first.

    The id range bounds the walk whatever the words and filters: at most the window's rows are
    read, even for words the planner wrongly believes common. Run it in `task_search_recent_plan()`.
    """
    newest_id = Subquery(Task.objects.order_by("-pk").values("pk")[:1])
    window_start = ExpressionWrapper(newest_id - settings.TASK_SEARCH_RECENT_WINDOW, output_field=BigIntegerField())
    return queryset.filter(pk__gt=window_start, search_vector=query).order_by("-pk")


@contextmanager
def task_search_recent_plan() -> Iterator[None]:
    """The primary key walked backwards, never a bitmap: a bitmap would AND the GIN index's whole
    bitmap of the word (12 ms for a common one) before the first row."""
    with _planner_settings(_RECENT_WINDOW_PLAN_SETTINGS):
        yield


@contextmanager
def task_search_plan() -> Iterator[None]:
    """Bitmap scans only, for the queries of a `task_search` in this block.

    With a LIMIT the planner trusts its match estimate: for a word combination it believes
    common but that matches few rows (`renewal contract` at 1M tasks: estimated 40,000, found
    0), it walks the table expecting to stop early and reads all of it (150 ms instead of
    8 ms). With sequential and plain index scans off the candidates always come from the GIN
    index's bitmap, which costs what the matches cost. SET LOCAL ends with the transaction.
    """
    with _planner_settings(_SEARCH_PLAN_SETTINGS):
        yield


@contextmanager
def _planner_settings(values: dict[str, str]) -> Iterator[None]:
    """SET LOCAL `values` for the queries in this block, in a transaction (or savepoint)."""
    nested = connection.in_atomic_block
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_setting(name), set_config(name, value, true)"
                " FROM unnest(%s::text[], %s::text[]) AS plan(name, value)",
                [list(values), list(values.values())],
            )
            previous = [row[0] for row in cursor.fetchall()]
        yield
        if nested:
            # Inside an outer transaction SET LOCAL would outlive this block: put the values back.
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT set_config(name, value, true) FROM unnest(%s::text[], %s::text[]) AS plan(name, value)",
                    [list(values), previous],
                )


_SEARCH_PLAN_SETTINGS = {
    "enable_seqscan": "off",
    "enable_indexscan": "off",
    # A parallel scan would return its first candidates in no fixed order.
    "max_parallel_workers_per_gather": "0",
}
_RECENT_WINDOW_PLAN_SETTINGS = {
    "enable_seqscan": "off",
    "enable_indexscan": "on",
    "enable_bitmapscan": "off",
    "max_parallel_workers_per_gather": "0",
}


def tasks_overdue(queryset: QuerySet[Task], overdue: bool) -> QuerySet[Task]:
    condition = Q(status__in=Task.OPEN_STATUSES, deadline__lt=timezone.now())
    return queryset.filter(condition) if overdue else queryset.exclude(condition)


def tasks_by_ids(ids: list[int]) -> tuple[list[dict], list[int]]:
    """One query for up to BATCH_MAX_IDS task rows, in the order asked; also returns the missing ids."""
    found = {row["id"]: row for row in task_rows().filter(pk__in=ids)}
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
