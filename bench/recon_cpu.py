"""CPU seconds of one 1M x 1M reconciliation (ingest, then match), for comparing two versions of
the code on a shared machine: wall time there measures the neighbours as much as the code.

    python -m project.devservices exec -- python bench/recon_cpu.py --records 1000000

Counts the CPU of the embedded cluster's processes (the postmaster's children, parallel workers
included through the postmaster's reaped-children time) and of this process, around the same
steps as bench/reconciliation.py (both uploads at once, then one execution), on the same data.
Linux only (/proc). Prints wall time beside it, and the auto matches' precision and recall.
"""

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ.setdefault("SLOW_QUERY_MS", "100000")
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ.setdefault("DB_STATEMENT_TIMEOUT_MS", "0")

import django

django.setup()

from django.db import connection  # noqa: E402

from bench import reconciliation as bench  # noqa: E402
from bench.recon_data import score  # noqa: E402
from project.devservices import VAR_DIR  # noqa: E402
from reconciliation import jobs  # noqa: E402
from reconciliation.models import Execution, Match  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, int, int]:
    """(parent pid, own utime+stime, reaped children's utime+stime) in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def cluster_cpu_s(postmaster: int) -> float:
    _, own, reaped = _stat(postmaster)
    total = own + reaped
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            parent, own, reaped = _stat(int(entry))
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if parent == postmaster:
            total += own + reaped
    return total / TICKS


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="left records")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    postmaster = int((VAR_DIR / "postgres" / "postmaster.pid").read_text().splitlines()[0])
    data = bench.dataset(args.records, args.seed)
    job = bench.fresh_job(args.records)
    try:
        figures = {}
        for step in ("ingest", "match"):
            if step == "match":
                with connection.cursor() as cursor:
                    cursor.execute("ANALYZE reconciliation_record")  # not counted, as in bench/reconciliation.py
                execution = Execution.objects.create(tenant_id=job.tenant_id, job=job)
            db, own, wall = cluster_cpu_s(postmaster), own_cpu_s(), time.perf_counter()
            if step == "ingest":
                bench.ingest_both(job, data.left_csv, data.right_csv, concurrent=True)
            else:
                jobs.run_execution.run_now({"execution_id": execution.pk})
            figures[step] = (cluster_cpu_s(postmaster) - db, own_cpu_s() - own, time.perf_counter() - wall)
        execution.refresh_from_db()
        assert execution.status == Execution.Status.SUCCEEDED, execution.error
        auto = score(data.truth_csv, bench.predicted_pairs(job, Match.Status.AUTO))
    finally:
        bench.drop_job(job)
    for step, (db, own, wall) in figures.items():
        print(f"{step:<7} CPU {db + own:6.2f} s (database {db:.2f}, this process {own:.2f})   wall {wall:.2f} s")
    total = sum(db + own for db, own, _ in figures.values())
    print(f"total   CPU {total:6.2f} s   auto precision / recall {auto.precision:.5f} / {auto.recall:.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
