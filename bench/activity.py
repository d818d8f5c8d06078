"""Benchmark: guide 003's four activity-log reads through project.selectors.activity_logs.

    .venv/bin/python -m project.devservices exec -- .venv/bin/python bench/activity.py              # 10M rows
    .venv/bin/python -m project.devservices exec -- .venv/bin/python bench/activity.py --rows 1000000

Seeds N rows (default 10,000,000) spread evenly over 12 monthly partitions ending this month,
then times the first page (50 rows, keyset on (created_at, id), as the API reads it) of:

- recent activity            (activity_created_desc_idx)
- a user's timeline          (activity_user_created_idx)
- by category + action       (activity_action_created_idx)
- metadata search            (metadata @> {"job_id": n}, activity_metadata_path_gin)

each with random parameters, p50/p95 over --repeat runs, read as the API reads it (one month
window at a time, TimeWindowPaginator); beside each, the same page as one query over the whole
partitioned table (the reader before the window walk), and the baseline: the same read with the
index it uses dropped (inside a transaction that is rolled back). It also prints
how many partitions a read of the last 7 days plans to touch (pruning).
Writes a text report to bench/results/ with the load average before and after.
"""

import argparse
import json
import os
import platform
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ.setdefault("SLOW_QUERY_MS", "100000")  # the baselines are slow on purpose
# 12 monthly partitions: partition maintenance (run after migrate) must not archive 7-11 back.
os.environ.setdefault("PARTITION_MONTHS_BACK", "11")

import django

django.setup()

from dateutil.relativedelta import relativedelta  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from bench.timing import percentile  # noqa: E402
from project.api.pagination import KeysetPaginator, TimeWindowPaginator  # noqa: E402
from project.models import ActivityLog  # noqa: E402
from project.partitions import maintain_monthly_partitions, month_start  # noqa: E402
from project.selectors import ACTIVITY_ORDERING, ActivityFilters, activity_logs, activity_read_windows  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TABLE = ActivityLog._meta.db_table
PAGE_SIZE = 50
USERS = 500
CATEGORIES = ["tasks", "approvals", "reconciliation", "project"]
VERBS = ["create", "update", "delete", "approve", "reject", "run", "cancel", "import", "export", "assign"]
JOB_IDS = 5000
BATCH = 100_000


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def bench_users() -> list[int]:
    User = get_user_model()
    names = [f"bench-activity-{n}" for n in range(USERS)]
    existing = set(User.objects.filter(username__in=names).values_list("username", flat=True))
    User.objects.bulk_create([User(username=name) for name in names if name not in existing])
    return list(User.objects.filter(username__in=names).order_by("id").values_list("id", flat=True))


def seed(rows: int, user_ids: list[int]) -> tuple[datetime, datetime]:
    """`rows` rows in created_at order from the first day of 11 months ago to now."""
    today = datetime.now(UTC).date()
    maintain_monthly_partitions(TABLE, today=today, months_back=11, months_ahead=1)
    first = month_start(today) - relativedelta(months=11)
    start = datetime(first.year, first.month, 1, tzinfo=UTC)
    end = datetime.now(UTC)
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {TABLE}")
    for offset in range(0, rows, BATCH):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"""
                INSERT INTO {TABLE} (created_at, user_id, category, action, level, entity_type, entity_id,
                                     metadata, tags)
                SELECT %(start)s + (%(end)s - %(start)s) * (n::float8 / %(rows)s),
                       (%(users)s::bigint[])[1 + (n * 7919) %% %(user_count)s],
                       (%(categories)s::text[])[1 + (n %% 40) / 10],
                       (%(categories)s::text[])[1 + (n %% 40) / 10] || '_' || (%(verbs)s::text[])[1 + n %% 10],
                       CASE WHEN n %% 100 = 0 THEN 'error' ELSE 'info' END,
                       'task', (n %% 100000)::text,
                       jsonb_build_object('job_id', (n * 31) %% %(job_ids)s, 'count', n %% 7),
                       '[]'::jsonb
                FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS n
                """,
                {
                    "start": start,
                    "end": end,
                    "rows": rows,
                    "users": user_ids,
                    "user_count": len(user_ids),
                    "categories": CATEGORIES,
                    "verbs": VERBS,
                    "job_ids": JOB_IDS,
                    "first": offset,
                    "last": min(offset + BATCH, rows) - 1,
                },
            )
        print(f"  {min(offset + BATCH, rows):,} rows", flush=True)
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {TABLE}")
    return start, end


def first_page(filters: ActivityFilters, paginator_class=TimeWindowPaginator) -> int:
    """The first page as the API and the admin page read it (one month window at a time)."""
    if paginator_class is TimeWindowPaginator:
        paginator = TimeWindowPaginator(activity_logs(filters), ACTIVITY_ORDERING, activity_read_windows(filters))
    else:  # one query over the whole partitioned table, as before the window walk
        paginator = KeysetPaginator(activity_logs(filters), ACTIVITY_ORDERING)
    return len(list(paginator.page(first=PAGE_SIZE)))


def time_read(make_filters, repeat: int, rng: random.Random, paginator_class=TimeWindowPaginator):
    timings, rows = [], 0
    for n in range(repeat + 2):  # two warm-up reads are not counted
        filters = make_filters(rng)
        started = time.perf_counter()
        rows = first_page(filters, paginator_class)
        if n >= 2:
            timings.append((time.perf_counter() - started) * 1000)
    return timings, rows


def time_without_index(index: str, make_filters, repeat: int, rng: random.Random) -> list[float]:
    """The read (as the API reads it) with its index dropped, inside a rolled-back transaction."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f'DROP INDEX "{index}"')  # rolled back below: the baseline only
        timings, _ = time_read(make_filters, repeat, rng)
        transaction.set_rollback(True)
    return timings


def partitions_planned(filters: ActivityFilters) -> int:
    plan = json.loads(activity_logs(filters)[:PAGE_SIZE].explain(format="json"))[0]["Plan"]
    found = set()
    stack = [plan]
    while stack:
        node = stack.pop()
        if node.get("Relation Name", "").startswith(f"{TABLE}_"):
            found.add(node["Relation Name"])
        stack.extend(node.get("Plans", []))
    return len(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--baseline-repeat", type=int, default=10)
    parser.add_argument("--reuse", action="store_true", help="keep the rows already seeded if the count matches")
    args = parser.parse_args()
    load_before = load_average()
    rng = random.Random(16)
    call_command("migrate", verbosity=0)

    user_ids = bench_users()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {TABLE}")
        have = cursor.fetchone()[0]
    if not (args.reuse and have == args.rows):
        print(f"seeding {args.rows:,} activity rows over 12 monthly partitions...", flush=True)
        started = time.perf_counter()
        seed(args.rows, user_ids)
        print(f"  seeded in {time.perf_counter() - started:.0f}s", flush=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass", [TABLE])
        partitions = cursor.fetchone()[0]

    reads = [
        ("recent activity", "activity_created_desc_idx", lambda r: ActivityFilters()),
        ("a user's timeline", "activity_user_created_idx", lambda r: ActivityFilters(user_id=r.choice(user_ids))),
        (
            "by category + action",
            "activity_action_created_idx",
            lambda r: ActivityFilters(
                category=(category := r.choice(CATEGORIES)), action=f"{category}_{r.choice(VERBS)}"
            ),
        ),
        (
            "metadata search",
            "activity_metadata_path_gin",
            lambda r: ActivityFilters(metadata={"job_id": r.randrange(JOB_IDS)}),
        ),
    ]
    lines = []
    for name, index, make_filters in reads:
        timings, rows = time_read(make_filters, args.repeat, rng)
        one_query, _ = time_read(make_filters, args.repeat, rng, KeysetPaginator)
        baseline = time_without_index(index, make_filters, args.baseline_repeat, rng)
        lines.append(
            f"{name:<24}{percentile(timings, 0.5):>8.2f}{percentile(timings, 0.95):>8.2f}{rows:>6}"
            f"   {percentile(one_query, 0.5):>8.2f}{percentile(one_query, 0.95):>8.2f}"
            f"   {percentile(baseline, 0.5):>10.1f}{percentile(baseline, 0.95):>10.1f}   {index}"
        )
        print(lines[-1], flush=True)
    now = datetime.now(UTC)
    pruned = partitions_planned(ActivityFilters(created_from=now - timedelta(days=7), created_to=now))

    report = [
        f"bench/activity.py --rows {args.rows} --repeat {args.repeat} --baseline-repeat {args.baseline_repeat}",
        f"measured at {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC; {platform.platform()}, {os.cpu_count()} CPUs, "
        f"PostgreSQL {connection.cursor().connection.info.server_version}",
        f"load average (1/5/15 min) before: {load_before}   after: {load_average()}",
        f"{args.rows:,} rows in {partitions} partitions of {TABLE}; first page of {PAGE_SIZE}, keyset "
        f"(created_at, id) DESC, random parameters per run",
        "",
        f"{'read':<24}{'p50 ms':>8}{'p95 ms':>8}{'rows':>6}   {'1-query':>8}{'p95':>8}"
        f"   {'no-index p50':>10}{'p95':>10}   index used",
        *lines,
        "",
        f"recent activity of the last 7 days (created_after and created_before given): the plan touches "
        f"{pruned} of {partitions} partitions",
    ]
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"activity-{datetime.now(UTC):%Y%m%dT%H%M%S}.txt"
    out.write_text("\n".join(report) + "\n")
    print("\n".join(report))
    print(f"-> {out.relative_to(RESULTS_DIR.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
