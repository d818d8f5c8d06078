"""Benchmark: retention of JobRun (archive mode) over a table of --rows rows, half of them past 30 days.

    python -m project.devservices exec -- python bench/retention.py --rows 300000 --batch-size 1000

Reports rows archived per second and each batch's wall time (p50, p95, max): a batch's time is
the longest any row lock of retention is held, since every batch commits on its own. Also the
time of the "oldest waiting row" probe that feeds the cockpit and RetentionBehind. Rows it adds
(name "bench.retention") and their archive copies are removed at the end.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ.setdefault("SLOW_QUERY_MS", "100000")  # seeding is slow on purpose

import django

django.setup()

from dataclasses import replace  # noqa: E402
from datetime import timedelta  # noqa: E402

from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402

from bench.timing import percentile  # noqa: E402
from project import retention  # noqa: E402

NAME = "bench.retention"


def seed(rows: int) -> None:
    with connection.cursor() as cursor:
        # started_at spread evenly over the last 60 days, oldest first (append order).
        cursor.execute(
            """
            INSERT INTO project_jobrun (name, celery_id, status, started_at, finished_at, duration_ms, result, error,
                                        schedule)
            SELECT %s, '', 'succeeded', now() - (%s - g) * interval '60 days' / %s,
                   now() - (%s - g) * interval '60 days' / %s, 5, '{"n": 1}', '', ''
            FROM generate_series(1, %s) g
            """,
            [NAME, rows, rows, rows, rows, rows],
        )
        cursor.execute("ANALYZE project_jobrun")


def cleanup() -> None:
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM project_jobrun WHERE name = %s", [NAME])
        cursor.execute("SELECT to_regclass('archive.project_jobrun') IS NOT NULL")
        if cursor.fetchone()[0]:
            cursor.execute("DELETE FROM archive.project_jobrun WHERE name = %s", [NAME])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    policy = next(p for p in retention.registered_policies() if p.model == "project.JobRun")
    policy = replace(policy, batch_size=args.batch_size)
    table = retention._table(policy)
    cleanup()
    seed(args.rows)
    retention.ensure_archive_table(table)
    cutoff = timezone.now() - timedelta(days=policy.keep_days)
    batch_ms, moved = [], 0
    started = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        count = retention.move_one_batch(policy, table, cutoff)
        batch_ms.append((time.perf_counter() - t0) * 1000)
        moved += count
        if count < policy.batch_size:
            break
    total_s = time.perf_counter() - started
    t0 = time.perf_counter()
    retention.oldest_prunable_at(policy, table)
    probe_ms = (time.perf_counter() - t0) * 1000
    cleanup()
    print(
        f"rows={args.rows} archived={moved} batches={len(batch_ms)} batch_size={args.batch_size} "
        f"total={total_s:.1f}s rows_per_s={moved / total_s:.0f} "
        f"batch_ms p50={statistics.median(batch_ms):.1f} p95={percentile(batch_ms, 0.95):.1f} max={max(batch_ms):.1f} "
        f"oldest_probe_ms={probe_ms:.1f} load={' '.join(Path('/proc/loadavg').read_text().split()[:3])}"
    )


if __name__ == "__main__":
    main()
