"""Benchmark: ranked full-text search on /api/v1/tasks/?search= with 1,000,000 tasks.

    make bench-search                   # embedded PostgreSQL, seeds 1M tasks if needed
    python bench/search.py --rows 1000000 --repeat 20

Each request goes through the real TaskViewSet (filters, permissions, selector, serializer,
orjson) built with APIRequestFactory. Two variants, measured in the same run:

- bounded (today): the GIN index picks at most TASK_SEARCH_CANDIDATES_MAX matches, only those
  are ranked (tasks.selectors.task_search inside task_search_plan);
- rank-all (the baseline, the code before): every match is ranked, then the page is cut.

Terms: a common word (>= 10% of rows), a rare one (a task number: one row), a prefix (`invo*`)
and two words the planner believes common together but that never co-occur in the seed data.
Prints medians and p95 and writes JSON to bench/results/. Target: p95 < 100 ms for each term.
"""

import argparse
import json
import os
import platform
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ.setdefault("SLOW_QUERY_MS", "100000")  # the baseline is slow on purpose

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.postgres.search import SearchRank  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db.models import F, FloatField  # noqa: E402
from django.db.models.functions import Cast  # noqa: E402
from rest_framework.test import APIRequestFactory  # noqa: E402

from bench.timing import percentile, timed_request  # noqa: E402
from tasks import selectors  # noqa: E402
from tasks.api import TaskFilter, TaskViewSet  # noqa: E402
from tasks.models import Task  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGET_P95_MS = 100


class RankAllTaskFilter(TaskFilter):
    """The search before the bound: rank every match, then sort and cut the page."""

    def filter_search(self, queryset, name, value):
        query = selectors.task_search_query(value)
        rank = Cast(SearchRank(F("search_vector"), query), output_field=FloatField())
        return queryset.filter(search_vector=query).annotate(search_rank=rank)


class RankAllTaskViewSet(TaskViewSet):
    filterset_class = RankAllTaskFilter

    def list(self, request, *args, **kwargs):
        return super(TaskViewSet, self).list(request, *args, **kwargs)  # no search plan either


def machine_load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def measure(view, factory, user, text: str, repeat: int) -> dict:
    timings, rows = [], 0
    for _ in range(repeat + 2):  # two warm-up requests are not counted
        elapsed_ms, response = timed_request(view, factory.get("/api/v1/tasks/", {"search": text}), user)
        timings.append(elapsed_ms)
        rows = len(json.loads(response.content)["results"])
    timings = timings[2:]
    return {"median_ms": statistics.median(timings), "p95_ms": percentile(timings, 0.95), "rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    existing = Task.objects.count()
    if existing < args.rows:
        print(f"seeding tasks up to {args.rows:,} (have {existing:,})...", flush=True)
        call_command("seed_demo", "--tasks", str(args.rows), verbosity=0)
    total = Task.objects.count()
    rare_task = Task.objects.order_by("id")[total // 2]
    rare = rare_task.title.rsplit("#", 1)[-1]  # the seed's task number: in exactly one title
    terms = {"common": "invoice", "rare": rare, "prefix": "invo*", "uncorrelated pair": "renewal contract"}
    matches = {
        label: Task.objects.filter(search_vector=selectors.task_search_query(text)).count()
        for label, text in terms.items()
    }

    user, _ = get_user_model().objects.get_or_create(username="bench", defaults={"is_superuser": True})
    if not user.is_superuser:
        user.is_superuser = True
        user.save(update_fields=["is_superuser"])
    factory = APIRequestFactory()
    TaskViewSet.throttle_classes = []  # this measures the handler, not the per-user throttle
    bounded_view = TaskViewSet.as_view({"get": "list"})
    rank_all_view = RankAllTaskViewSet.as_view({"get": "list"})

    load_before = machine_load()
    results = {}
    for label, text in terms.items():
        results[label] = {
            "term": text,
            "matches": matches[label],
            "bounded": measure(bounded_view, factory, user, text, args.repeat),
            "rank_all": measure(rank_all_view, factory, user, text, args.repeat),
        }
    load_after = machine_load()

    result = {
        "benchmark": "search",
        "measured_at": datetime.now(UTC).isoformat(),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average_1_5_15": {"before": load_before, "after": load_after},
        "tasks": total,
        "candidates_max": django.conf.settings.TASK_SEARCH_CANDIDATES_MAX,
        "repeat": args.repeat,
        "terms": results,
        "target_p95_ms": TARGET_P95_MS,
    }
    result["targets_met"] = all(row["bounded"]["p95_ms"] < TARGET_P95_MS for row in results.values())
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"search-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2))

    print(f"\n/api/v1/tasks/?search= with {total:,} tasks, {args.repeat} requests each, one at a time")
    print(f"load average (1/5/15 min) before {load_before}, after {load_after}")
    print(f"{'term':<38}{'matches':>10}{'bounded p50/p95 ms':>22}{'rank-all p50/p95 ms':>22}{'rows':>6}")
    for label, row in results.items():
        b, r = row["bounded"], row["rank_all"]
        print(
            f"{label + ' ' + repr(row['term']):<38}{row['matches']:>10,}"
            f"{b['median_ms']:>13.1f} / {b['p95_ms']:<6.1f}{r['median_ms']:>13.1f} / {r['p95_ms']:<6.1f}{b['rows']:>6}"
        )
    shown = out.relative_to(RESULTS_DIR.parent.parent)
    print(f"targets met (bounded p95 < {TARGET_P95_MS} ms): {result['targets_met']}   -> {shown}")
    return 0 if result["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
