"""Where a 1M-row upload's time goes: the ingest's own statements, one table shape at a time.

    python -m project.devservices exec -- python bench/recon_ingest_steps.py [--records 1000000]

Uses bench/reconciliation.py's generated left CSV (made on first use) and the ingest's real
statements (reconciliation.ingest.records): COPY into the staging table, then the one-statement
checked INSERT ... SELECT into a scratch copy of reconciliation_record with no index, then with
each of the records table's indexes added in turn, then the same load with the indexes built
afterwards; last, the real upload into reconciliation_record. Every step runs in its own
transaction, rolled back: nothing is kept. The machine should be quiet; each step is run twice
and the faster run printed, with the load average.
"""

import argparse
import os
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
from reconciliation.ingest import records  # noqa: E402

SCRATCH = "bench_ingest_target"
# The records table's indexes (reconciliation/models.py), in the order they are added.
INDEXES = (
    ("primary key (id)", f"ALTER TABLE {SCRATCH} ADD PRIMARY KEY (id)"),
    ("unique (job, side, external_id)", f"CREATE UNIQUE INDEX ON {SCRATCH} (job_id, side, external_id)"),
    (
        "candidate (job, side, currency, amount)",
        f"CREATE INDEX ON {SCRATCH} (job_id, side, currency, amount) INCLUDE (booked_on)",
    ),
    ("BRIN (created_at)", f"CREATE INDEX ON {SCRATCH} USING brin (created_at)"),
)


class Rollback(Exception):
    pass


def staged(cursor, csv_path: Path, job) -> tuple[records.IngestStatements, float]:
    """The staging table of one upload, filled by COPY; the statements over it and COPY's time."""
    with csv_path.open("rb") as stream:
        header, chunks = records._csv_chunks(stream)
        columns = records._columns_from_header(header)
        statements = records._stage_and_check(cursor, job=job, columns=columns, default_side="left")
        started = time.perf_counter()
        records._copy_into_staging(cursor, columns, chunks=chunks, rows=None)
    return statements, time.perf_counter() - started


def scratch_insert(cursor, statements: records.IngestStatements) -> str:
    """The ingest's own checked INSERT, into the scratch table instead of the records table."""
    text = statements.insert_if_clean.as_string(cursor.connection)
    return text.replace("INSERT INTO reconciliation_record", f"INSERT INTO {SCRATCH}", 1)


def step(csv_path: Path, job, *, generated: bool, indexes_before: int, indexes_after: int) -> dict:
    """One load into a fresh scratch table; seconds of the insert and of each index built after."""
    timings = {}
    try:
        with transaction.atomic(), connection.cursor() as django_cursor:
            cursor = django_cursor.cursor
            statements, timings["copy"] = staged(cursor, csv_path, job)
            like = "INCLUDING DEFAULTS INCLUDING IDENTITY" + (" INCLUDING GENERATED" if generated else "")
            cursor.execute(f"CREATE TABLE {SCRATCH} (LIKE reconciliation_record {like})")
            for _, ddl in INDEXES[:indexes_before]:
                cursor.execute(ddl)
            started = time.perf_counter()
            cursor.execute(scratch_insert(cursor, statements))
            timings["insert"] = time.perf_counter() - started
            for name, ddl in INDEXES[indexes_before : indexes_before + indexes_after]:
                started = time.perf_counter()
                cursor.execute(ddl)
                timings[f"build {name}"] = time.perf_counter() - started
            raise Rollback
    except Rollback:
        pass
    return timings


def real_upload(csv_path: Path, job) -> float:
    started = time.perf_counter()
    try:
        with transaction.atomic():
            with csv_path.open("rb") as stream:
                result = records.records_ingest(job=job, csv_stream=stream, side="left")
            assert result.inserted > 0, result.as_dict()
            elapsed = time.perf_counter() - started
            raise Rollback
    except Rollback:
        pass
    return elapsed


def best_of_two(run) -> dict:
    first, second = run(), run()
    return {key: min(first[key], second[key]) for key in first}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="left records (the generated CSV)")
    args = parser.parse_args()
    call_command("migrate", interactive=False, verbosity=0)
    data = dataset(args.records, 42)
    from reconciliation.models import ReconciliationJob, Tenant

    tenant, _ = Tenant.objects.get_or_create(slug="bench", defaults={"name": "Benchmark"})
    job = ReconciliationJob.objects.create(tenant=tenant, name="ingest steps")
    fake = SimpleNamespace(pk=job.pk, tenant_id=tenant.pk)
    rows = sum(1 for _ in data.left_csv.open("rb")) - 1
    print(f"bench/recon_ingest_steps.py: {rows:,} rows ({data.left_csv.name}), load average {os.getloadavg()[0]:.2f}")
    print(f"  {'step':<66} {'seconds':>8} {'rows/s':>11}")

    def line(name: str, seconds: float) -> None:
        print(f"  {name:<66} {seconds:8.2f} {rows / seconds:11,.0f}")

    try:
        bare = best_of_two(lambda: step(data.left_csv, fake, generated=False, indexes_before=0, indexes_after=0))
        line("COPY into staging (floor)", bare["copy"])
        line("checked INSERT ... SELECT, no index, reference_norm a plain column", bare["insert"])
        generated = best_of_two(lambda: step(data.left_csv, fake, generated=True, indexes_before=0, indexes_after=0))
        line("  + reference_norm generated (three regexp_replace)", generated["insert"])
        for count in range(1, len(INDEXES) + 1):
            with_indexes = best_of_two(
                lambda count=count: step(data.left_csv, fake, generated=True, indexes_before=count, indexes_after=0)
            )
            line(f"  + {INDEXES[count - 1][0]} maintained during the insert", with_indexes["insert"])
        after = best_of_two(
            lambda: step(data.left_csv, fake, generated=True, indexes_before=0, indexes_after=len(INDEXES))
        )
        line("no index during the insert, then:", after["insert"])
        for name, _ in INDEXES:
            line(f"  build {name}", after[f"build {name}"])
        line(
            "  insert + every build",
            after["insert"] + sum(after[f"build {name}"] for name, _ in INDEXES),
        )
        real = min(real_upload(data.left_csv, job), real_upload(data.left_csv, job))
        line("records_ingest into reconciliation_record (COPY included)", real)
    finally:
        job.delete()
    print(f"  load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
