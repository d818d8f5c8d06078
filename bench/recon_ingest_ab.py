"""The ingest's checked INSERT of a 1M-row upload at two revisions of reconciliation/ingest/records.py.

    python -m project.devservices exec -- python bench/recon_ingest_ab.py --baseline-rev HEAD~1

A change to the ingest's SQL is judged against the code it replaces, in the same process on the
same staged rows: the baseline's records.py is read from git (`git show REV:...`) and imported
beside the working tree's. Each round stages bench/reconciliation.py's generated left CSV with
COPY, then runs each revision's one-statement INSERT (the fast path of an upload of new good
rows), one after the other, into a scratch copy of reconciliation_record without indexes (what the
checks cost) and into reconciliation_record itself (the whole upload's INSERT). Every round is
rolled back; the best of --rounds is printed for each.
"""

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from bench.reconciliation import dataset  # noqa: E402
from reconciliation.ingest import records as working_tree  # noqa: E402

MODULE = "reconciliation/ingest/records.py"
SCRATCH = "bench_ingest_target"


def module_at(rev: str):
    git = shutil.which("git") or "git"
    source = subprocess.run([git, "show", f"{rev}:{MODULE}"], cwd=ROOT, check=True, capture_output=True).stdout
    path = ROOT / "var" / "bench" / f"records_at_{rev.replace('/', '_').replace('~', '_')}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("records_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Rollback(Exception):
    pass


def new_job(tenant) -> SimpleNamespace:
    from reconciliation.models import ReconciliationJob

    job = ReconciliationJob.objects.create(tenant=tenant, name="ingest a/b")
    return SimpleNamespace(pk=job.pk, tenant_id=tenant.pk)


def one_round(csv_path: Path, tenant, order: list) -> dict:
    """Stage once; each revision's INSERT into the scratch table and into the records table (a
    rolled-back INSERT leaves dead rows behind: the rounds alternate which revision goes first)."""
    timings = {}
    try:
        with transaction.atomic(), connection.cursor() as django_cursor:
            cursor = django_cursor.cursor
            cursor.execute("SET LOCAL statement_timeout = 0")
            staging_job = new_job(tenant)
            with csv_path.open("rb") as stream:
                header, chunks = working_tree._csv_chunks(stream)
                columns = working_tree._columns_from_header(header)
                working_tree._stage_and_check(cursor, job=staging_job, columns=columns, default_side="left")
                working_tree._copy_into_staging(cursor, columns, chunks=chunks, rows=None)
            cursor.execute(
                f"CREATE TABLE {SCRATCH} (LIKE reconciliation_record INCLUDING DEFAULTS INCLUDING IDENTITY"
                " INCLUDING GENERATED)"
            )
            for target in ("scratch", "records"):
                for name, module in order:
                    # A job of its own: no dead index entries of another revision's rows to step over.
                    job = new_job(tenant)
                    statements = module.check_and_insert_statements(job=job, columns=columns, default_side="left")
                    text = statements.insert_if_clean.as_string(cursor.connection)
                    if target == "scratch":
                        text = text.replace("INSERT INTO reconciliation_record", f"INSERT INTO {SCRATCH}", 1)
                    cursor.execute("SAVEPOINT one_insert")
                    started = time.perf_counter()
                    cursor.execute(text)
                    timings[(target, name)] = time.perf_counter() - started
                    inserted = cursor.rowcount
                    cursor.execute("ROLLBACK TO SAVEPOINT one_insert")
                    timings[("rows", name)] = inserted
            raise Rollback
    except Rollback:
        pass
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-rev", default="HEAD", help="git revision of the baseline records.py")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    call_command("migrate", interactive=False, verbosity=0)
    data = dataset(args.records, 42)
    from reconciliation.models import Tenant

    tenant, _ = Tenant.objects.get_or_create(slug="bench", defaults={"name": "Benchmark"})
    revisions = {f"baseline ({args.baseline_rev})": module_at(args.baseline_rev), "working tree": working_tree}
    pairs = list(revisions.items())
    rounds = [one_round(data.left_csv, tenant, pairs if n % 2 == 0 else pairs[::-1]) for n in range(args.rounds)]
    rows = rounds[0][("rows", "working tree")]
    for name in revisions:
        assert all(timings[("rows", name)] == rows for timings in rounds), f"{name} inserted another row count"
    print(f"bench/recon_ingest_ab.py: {rows:,} rows, best of {args.rounds}, load average {os.getloadavg()[0]:.2f}")
    print(f"  {'revision':<28} {'checks+insert, no index':>24} {'into reconciliation_record':>27}")
    for name in revisions:
        scratch = min(timings[("scratch", name)] for timings in rounds)
        real = min(timings[("records", name)] for timings in rounds)
        print(f"  {name:<28} {scratch:8.2f} s {rows / scratch:9,.0f}/s {real:10.2f} s {rows / real:9,.0f}/s")
    print(f"  load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
