"""Benchmark: a source profile's CSV against a plain CSV, and the streamed export of an execution.

    make bench-recon-files                              # --records 200000
    python bench/recon_files.py --records 1000000       # the issue's size (a quiet machine)

1. Ingest: the same N records as a plain CSV (the ingest's own columns) and as a bank export in a
   source profile's shape (semicolons, DD.MM.YYYY, 1.234,56, debit and credit columns,
   Windows-1252), each into a fresh job through `records_ingest` / `records_ingest_with_profile`;
   best of two runs each, records/s and the profile's share of the plain rate (issue 14: >= 80%).
2. Export: an execution with N matches (and their 2N records, written in SQL), exported as CSV
   and NDJSON through a real gunicorn worker (sync, one worker) and read by httpx in one request:
   wall time, bytes, rows, and the worker's RSS before and at its peak (sampled every 20 ms from
   /proc, and the kernel's own high-water mark VmHWM).
"""

import argparse
import os
import random
import socket
import subprocess
import sys
import threading
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ.setdefault("DB_STATEMENT_TIMEOUT_MS", "0")

import django

django.setup()

import httpx  # noqa: E402
import psutil  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from knox.models import AuthToken  # noqa: E402

from reconciliation.ingest.profiles import records_ingest_with_profile  # noqa: E402
from reconciliation.ingest.records import records_ingest  # noqa: E402
from reconciliation.models import Execution, ReconciliationJob, SourceProfile, Tenant, TenantMembership  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "var" / "bench"
PROFILE = {
    "columns": {
        "external_id": "Buchungs-ID",
        "booked_on": "Buchungstag",
        "value_date": "Valuta",
        "debit": "Soll",
        "credit": "Haben",
        "currency": "Währung",
        "reference": "Verwendungszweck",
        "counterparty": "Empfänger",
    },
    "date_format": "DD.MM.YYYY",
    "decimal_separator": ",",
    "thousands_separator": ".",
    "delimiter": ";",
    "encoding": "windows-1252",
}


def write_files(n: int, seed: int) -> tuple[Path, Path]:
    plain, profiled = DATA_DIR / f"files-plain-{n}-{seed}.csv", DATA_DIR / f"files-profile-{n}-{seed}.csv"
    if plain.exists() and profiled.exists():
        return plain, profiled
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    start = date(2026, 1, 1)
    with plain.open("w", encoding="utf-8") as p, profiled.open("w", encoding="cp1252") as q:
        p.write("external_id,amount,currency,booked_on,reference,counterparty,value_date\n")
        q.write("Buchungs-ID;Buchungstag;Valuta;Empfänger;Verwendungszweck;Soll;Haben;Währung\n")
        for i in range(n):
            cents = rng.randint(-500_000_00, 500_000_00) or 1
            amount = Decimal(cents).scaleb(-2)
            day = start + timedelta(days=i % 365)
            party = f"Müller {i % 997} GmbH"
            p.write(f"B{i},{amount},EUR,{day.isoformat()},RE-{i},{party},{day.isoformat()}\n")
            german = f"{abs(amount):,.2f}".replace(",", "_").replace(".", ",").replace("_", ".")
            debit, credit = (german, "") if amount < 0 else ("", german)
            q.write(f"B{i};{day:%d.%m.%Y};{day:%d.%m.%Y};{party};RE-{i};{debit};{credit};EUR\n")
    return plain, profiled


def fresh_job(tenant: Tenant, name: str) -> ReconciliationJob:
    return ReconciliationJob.objects.create(tenant=tenant, name=name)


def drop_job(job: ReconciliationJob) -> None:
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM reconciliation_match WHERE job_id = %s", [job.pk])
        cursor.execute("DELETE FROM reconciliation_record WHERE job_id = %s", [job.pk])
    Execution.objects.filter(job=job).delete()
    job.delete()


def bench_ingest(tenant: Tenant, n: int, seed: int) -> dict:
    plain, profiled = write_files(n, seed)
    profile = SourceProfile.objects.create(tenant=tenant, name="bench", **PROFILE)
    rates: dict[str, list[float]] = {"plain": [], "profile": []}
    for attempt in range(2):
        for kind, path in (("plain", plain), ("profile", profiled)):
            job = fresh_job(tenant, f"bench {kind} {attempt}")
            started = time.perf_counter()
            with path.open("rb") as stream:
                if kind == "plain":
                    result = records_ingest(job=job, csv_stream=stream, side="left")
                else:
                    result = records_ingest_with_profile(job=job, profile=profile, csv_stream=stream, side="left")
            elapsed = time.perf_counter() - started
            assert result.inserted == n, (kind, result.as_dict())
            rates[kind].append(n / elapsed)
            drop_job(job)
    best = {kind: max(values) for kind, values in rates.items()}
    return {"plain": best["plain"], "profile": best["profile"], "share": best["profile"] / best["plain"]}


def seed_execution(tenant: Tenant, n: int) -> Execution:
    """N one-to-one matches and their 2N records, written in SQL (the matcher is not measured here)."""
    job = fresh_job(tenant, "bench export")
    execution = Execution.objects.create(tenant=tenant, job=job, status=Execution.Status.SUCCEEDED)
    with connection.cursor() as cursor:
        cursor.execute(
            """INSERT INTO reconciliation_record (tenant_id, job_id, side, external_id, amount, currency, booked_on,
                                                  reference, counterparty, description, raw, created_at)
               SELECT %(t)s, %(j)s, s.side, s.side || '-' || g, (g %% 1000000) / 100.0, 'EUR', date '2026-03-01',
                      'INV' || g, '', '', '{}', now()
               FROM generate_series(1, %(n)s) g CROSS JOIN (VALUES ('left'), ('right')) s(side)""",
            {"t": tenant.pk, "j": job.pk, "n": n},
        )
        cursor.execute("ANALYZE reconciliation_record")  # else the pairing below is a nested loop
        cursor.execute(
            """INSERT INTO reconciliation_match (tenant_id, job_id, execution_id, pass_name, status, confidence,
                                                 left_ids, right_ids, left_amount, right_amount, note)
               SELECT %(t)s, %(j)s, %(e)s, 'exact', 'auto', 1, ARRAY[l.id], ARRAY[r.id], l.amount, r.amount, ''
               FROM reconciliation_record l
               JOIN reconciliation_record r ON r.job_id = %(j)s AND r.side = 'right'
                                           AND r.external_id = 'right-' || substr(l.external_id, 6)
               WHERE l.job_id = %(j)s AND l.side = 'left'""",
            {"t": tenant.pk, "j": job.pk, "e": execution.pk},
        )
    return execution


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_web(port: int) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "gunicorn", "project.wsgi:application", "--bind", f"127.0.0.1:{port}",
        "--workers", "1", "--timeout", "900", "--no-control-socket", "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, "DB_STATEMENT_TIMEOUT_MS": "30000", "ALLOWED_HOSTS": "127.0.0.1,localhost"}
    web = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return web
        except httpx.TransportError:
            time.sleep(0.2)
    web.terminate()
    raise RuntimeError("gunicorn did not answer /health")


def worker_of(web: subprocess.Popen) -> psutil.Process:
    children = psutil.Process(web.pid).children()
    assert len(children) == 1, children
    return children[0]


def vm_hwm_mb(process: psutil.Process) -> float:
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_export(tenant: Tenant, n: int, user) -> list[dict]:
    execution = seed_execution(tenant, n)
    _, token = AuthToken.objects.create(user=user, expiry=None)
    port = free_port()
    web = start_web(port)
    results = []
    try:
        worker = worker_of(web)
        url = f"http://127.0.0.1:{port}/api/v1/reconciliations/executions/{execution.pk}/export/"
        for export_as in ("csv", "ndjson"):
            # A first small request warms the worker up (imports, the connection pool).
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
            before = worker.memory_info().rss / 2**20
            peak = [before]
            done = threading.Event()

            def sample(peak=peak, done=done):
                while not done.is_set():
                    peak[0] = max(peak[0], worker.memory_info().rss / 2**20)
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.perf_counter()
            size = lines = 0
            with httpx.stream(
                "GET", url, params={"as": export_as}, headers={"Authorization": f"Token {token}"}, timeout=900
            ) as response:
                assert response.status_code == 200, response.read()[:500]
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    lines += chunk.count(b"\n")
            elapsed = time.perf_counter() - started
            done.set()
            sampler.join()
            rows = lines - (1 if export_as == "csv" else 0)
            assert rows == n, (export_as, rows, n)
            results.append(
                {
                    "as": export_as,
                    "s": elapsed,
                    "mb": size / 2**20,
                    "rows": rows,
                    "rss_before": before,
                    "rss_peak": peak[0],
                    "vm_hwm": vm_hwm_mb(worker),
                }
            )
    finally:
        web.terminate()
        web.wait(timeout=30)
        drop_job(execution.job)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000, help="records per ingest and matches per export")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-export", action="store_true")
    args = parser.parse_args()
    n = args.records
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)  # a fresh checkout's database is empty

    suffix = f"{os.getpid()}-{int(time.time())}"
    tenant = Tenant.objects.create(name="bench files", slug=f"bench-files-{suffix}")
    user = get_user_model().objects.create_user(username=f"bench-files-{suffix}")
    TenantMembership.objects.create(tenant=tenant, user=user, role=TenantMembership.Role.VIEWER)
    print(f"# recon files bench, {n:,} records, {os.cpu_count()} cores")
    try:
        if not args.skip_ingest:
            ingest = bench_ingest(tenant, n, args.seed)
            print(f"ingest plain CSV        {ingest['plain']:>12,.0f} records/s")
            print(f"ingest with a profile   {ingest['profile']:>12,.0f} records/s")
            print(f"profile / plain         {ingest['share']:>12.0%}   (target >= 80%)")
        if not args.skip_export:
            for row in bench_export(tenant, n, user):
                print(
                    f"export {row['as']:<7} {row['rows']:,} rows, {row['mb']:.1f} MiB in {row['s']:.2f} s"
                    f" ({row['rows'] / row['s']:,.0f} rows/s); web worker RSS {row['rss_before']:.0f} MiB before,"
                    f" {row['rss_peak']:.0f} MiB peak (VmHWM {row['vm_hwm']:.0f} MiB)"
                )
    finally:
        SourceProfile.objects.filter(tenant=tenant).delete()
        AuthToken.objects.filter(user=user).delete()
        for job in ReconciliationJob.objects.filter(tenant=tenant):
            drop_job(job)
        TenantMembership.objects.filter(tenant=tenant).delete()
        tenant.delete()
        user.delete()


if __name__ == "__main__":
    main()
