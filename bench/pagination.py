"""Benchmark: keyset cursor vs OFFSET pagination on /api/v1/tasks/ with 1,000,000 tasks.

    make bench                          # embedded PostgreSQL, seeds 1M tasks if needed
    python bench/pagination.py --rows 1000000 --depth 900000 --repeat 25

Each variant is a full request through the real TaskViewSet (filters, permissions, selector,
serializer, orjson) built with APIRequestFactory, so only the pagination differs:

- cursor, first page;
- cursor, a page `depth` rows deep (the cursor of row depth-1, as a client walking there holds);
- OFFSET at the same depth (the baseline: the same view with LIMIT/OFFSET and no COUNT).

Prints a table of medians and writes JSON to bench/results/. Targets: deep/first <= 1.5 and
OFFSET/cursor at that depth >= 50.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ.setdefault("SLOW_QUERY_MS", "100000")  # the OFFSET baseline is slow on purpose

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from rest_framework import pagination  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.test import APIRequestFactory  # noqa: E402

from bench.timing import timed_request  # noqa: E402
from project.api.pagination import DEFAULT_ORDERING, KeysetPaginator  # noqa: E402
from tasks.api import TaskViewSet  # noqa: E402
from tasks.models import Task  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PAGE_SIZE = 50


class OffsetPagination(pagination.BasePagination):
    """The baseline: LIMIT/OFFSET on the same ordering, without COUNT (which would only add)."""

    def paginate_queryset(self, queryset, request, view=None):
        offset = int(request.query_params.get("offset", 0))
        return list(queryset.order_by(*DEFAULT_ORDERING)[offset : offset + PAGE_SIZE])

    def get_paginated_response(self, data):
        return Response({"results": data})


class OffsetTaskViewSet(TaskViewSet):
    pagination_class = OffsetPagination


def median_ms(view, request_factory, path, params, user, repeat: int) -> tuple[float, int]:
    timings = []
    rows = 0
    for _ in range(repeat + 2):  # two warm-up requests are not counted
        elapsed_ms, response = timed_request(view, request_factory.get(path, params), user)
        timings.append(elapsed_ms)
        rows = len(json.loads(response.content)["results"])
    return statistics.median(timings[2:]), rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--depth", type=int, default=900_000)
    parser.add_argument("--repeat", type=int, default=25)
    args = parser.parse_args()

    existing = Task.objects.count()
    if existing < args.rows:
        print(f"seeding tasks up to {args.rows:,} (have {existing:,})...", flush=True)
        started = time.perf_counter()
        call_command("seed_demo", "--tasks", str(args.rows), verbosity=0)
        print(f"  seeded in {time.perf_counter() - started:.1f}s")
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {Task._meta.db_table}")
    total = Task.objects.count()

    user, _ = get_user_model().objects.get_or_create(username="bench", defaults={"is_superuser": True})
    if not user.is_superuser:
        user.is_superuser = True
        user.save(update_fields=["is_superuser"])

    # The cursor a client holds after walking `depth` rows: position of row depth-1.
    boundary = Task.objects.order_by(*DEFAULT_ORDERING).only("id", "created_at")[args.depth - 1]
    deep_cursor = KeysetPaginator(Task.objects.all(), DEFAULT_ORDERING).encode_position(boundary, "n")

    factory = APIRequestFactory()
    # The per-user request throttle (100/min) would stop the run: this measures the handler.
    TaskViewSet.throttle_classes = []
    cursor_view = TaskViewSet.as_view({"get": "list"})
    offset_view = OffsetTaskViewSet.as_view({"get": "list"})
    path = "/api/v1/tasks/"
    first_ms, first_rows = median_ms(cursor_view, factory, path, {"page_size": PAGE_SIZE}, user, args.repeat)
    deep_ms, deep_rows = median_ms(
        cursor_view, factory, path, {"page_size": PAGE_SIZE, "cursor": deep_cursor}, user, args.repeat
    )
    offset_ms, offset_rows = median_ms(offset_view, factory, path, {"offset": args.depth}, user, args.repeat)

    result = {
        "benchmark": "pagination",
        "measured_at": datetime.now(UTC).isoformat(),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "postgres": connection.cursor().connection.info.server_version,
        "tasks": total,
        "depth": args.depth,
        "page_size": PAGE_SIZE,
        "repeat": args.repeat,
        "median_ms": {"cursor_first": first_ms, "cursor_deep": deep_ms, "offset_deep": offset_ms},
        "rows_returned": {"cursor_first": first_rows, "cursor_deep": deep_rows, "offset_deep": offset_rows},
        "ratios": {"deep_over_first": deep_ms / first_ms, "offset_over_cursor_deep": offset_ms / deep_ms},
        "targets": {"deep_over_first_max": 1.5, "offset_over_cursor_deep_min": 50},
    }
    result["targets_met"] = (
        result["ratios"]["deep_over_first"] <= 1.5 and result["ratios"]["offset_over_cursor_deep"] >= 50
    )
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"pagination-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2))

    print(f"\n/api/v1/tasks/ with {total:,} tasks, page_size {PAGE_SIZE}, median of {args.repeat} requests")
    print(f"{'variant':<34}{'median ms':>12}{'rows':>8}")
    print(f"{'cursor, first page':<34}{first_ms:>12.2f}{first_rows:>8}")
    print(f"{f'cursor, {args.depth:,} rows deep':<34}{deep_ms:>12.2f}{deep_rows:>8}")
    print(f"{f'OFFSET {args.depth:,} (baseline)':<34}{offset_ms:>12.2f}{offset_rows:>8}")
    print(f"\ndeep/first      = {result['ratios']['deep_over_first']:.2f}   (target <= 1.5)")
    print(f"OFFSET/cursor   = {result['ratios']['offset_over_cursor_deep']:.1f}   (target >= 50)")
    print(f"targets met: {result['targets_met']}   -> {out.relative_to(RESULTS_DIR.parent.parent)}")
    return 0 if result["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
