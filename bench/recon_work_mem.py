"""Matcher time by work_mem, before and after in one run: dry executions over one loaded job.

    python bench/recon_work_mem.py --records 100000 --values 4MB,64MB --rounds 2

Loads a bench/recon_data.py set once, then runs a dry execution (every pass and the exception
reasons, rolled back) per value and round, alternating the values so that a shared machine's
load falls on both alike. Prints the seconds per value (each run, and the best).
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from django.conf import settings
from django.db import connection

from bench.reconciliation import dataset, drop_job, fresh_job, ingest_both
from reconciliation.engine import jobs
from reconciliation.models import Execution


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--values", default="4MB,64MB")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    data = dataset(args.records, 42)
    job = fresh_job(args.records)
    timings: dict[str, list[float]] = {}
    try:
        ingest_both(job, data.left_csv, data.right_csv, concurrent=False)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE reconciliation_record")
        for _ in range(args.rounds):
            for value in args.values.split(","):
                settings.RECONCILIATION_MATCH_WORK_MEM = value
                execution = Execution.objects.create(tenant_id=job.tenant_id, job=job, dry_run=True)
                started = time.perf_counter()
                jobs.run_execution.run_now({"execution_id": execution.pk})
                timings.setdefault(value, []).append(round(time.perf_counter() - started, 2))
    finally:
        drop_job(job)
    for value, seconds in timings.items():
        print(f"work_mem {value:>6}: dry execution {seconds} s (best {min(seconds)} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
