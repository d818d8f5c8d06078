"""Benchmark: reconciliation end to end — ingest, match, quality — beside a Python baseline.

    make bench-reconciliation                       # 100,000 x 100,000 and 1,000,000 x 1,000,000
    python bench/reconciliation.py --sizes 100000 --baseline-sample 5000

Per size, in one run:
1. Data from bench/recon_data.py (seeded, known truth; generated once into var/bench/).
2. Ingest: both CSVs through `records_ingest` (COPY into staging, checks in SQL, insert), as the
   API does: records/s.
3. Match: one execution through the job runner (`reconciliation.run_execution`), in this
   process, which is therefore the worker: wall time and peak RSS of the process.
4. Quality: precision and recall of the `auto` matches against the truth (bench/recon_data.py
   `score`), and how many pairs were left to a person (`suggested`).
5. Baseline: bench/recon_baseline.py, a Python candidate loop with dict indexes, on a sample of
   the left records, extrapolated to the full size.
6. The summary endpoint (GET /api/v1/reconciliations/{id}/summary) through its view: median and
   p95, cached as served and with the cache cleared before every request.

Targets (issue 4): 1M x 1M ingested and matched in <= 60 s; ingest >= 100,000 records/s;
auto precision >= 0.999 and recall >= 0.98; worker RSS < 500 MB; summary p95 < 10 ms.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ.setdefault("SLOW_QUERY_MS", "100000")
os.environ.setdefault("LOG_LEVEL", "WARNING")
# A million-record pass runs longer than production's 30 s request statement timeout.
os.environ.setdefault("DB_STATEMENT_TIMEOUT_MS", "0")

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.cache import cache  # noqa: E402
from django.db import connection  # noqa: E402
from rest_framework.test import APIRequestFactory  # noqa: E402

from bench.recon_baseline import baseline_match  # noqa: E402
from bench.recon_data import load_generated, score  # noqa: E402
from bench.timing import percentile, timed_request  # noqa: E402
from reconciliation import jobs  # noqa: E402
from reconciliation.api.jobs import ExecutionSummaryView  # noqa: E402
from reconciliation.ingest.records import records_ingest  # noqa: E402
from reconciliation.models import Execution, Match, ReconciliationJob, Tenant, TenantMembership  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DATA_DIR = ROOT / "var" / "bench"


def rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dataset(n_left: int, seed: int):
    out = DATA_DIR / f"recon-{n_left}-{seed}"
    generated = load_generated(out)
    if generated is None:
        # A separate process: the generator's memory must not count as the worker's.
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench" / "recon_data.py"),
                "--left",
                str(n_left),
                "--seed",
                str(seed),
                "--out",
                str(out),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        generated = load_generated(out)
    return generated


def fresh_job(n_left: int) -> ReconciliationJob:
    tenant, _ = Tenant.objects.get_or_create(slug="bench", defaults={"name": "Benchmark"})
    return ReconciliationJob.objects.create(tenant=tenant, name=f"bench {n_left:,} {datetime.now(UTC):%H:%M:%S}")


def drop_job(job: ReconciliationJob) -> None:
    """Remove what a run wrote (not timed), so the next size starts from the same place."""
    with connection.cursor() as cursor:
        for table in ("reconciliation_match", "reconciliation_unmatched"):
            cursor.execute(f"DELETE FROM {table} WHERE job_id = %s", [job.pk])
        cursor.execute(
            "DELETE FROM reconciliation_report WHERE execution_id IN "
            "(SELECT id FROM reconciliation_execution WHERE job_id = %s)",
            [job.pk],
        )
        cursor.execute("DELETE FROM reconciliation_execution WHERE job_id = %s", [job.pk])
        cursor.execute(
            "DELETE FROM reconciliation_matchedrecord WHERE record_id IN "
            "(SELECT id FROM reconciliation_record WHERE job_id = %s)",
            [job.pk],
        )
        cursor.execute("DELETE FROM reconciliation_record WHERE job_id = %s", [job.pk])
    job.delete()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE reconciliation_record")


def predicted_pairs(job: ReconciliationJob, status: str):
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT (SELECT array_agg(external_id) FROM reconciliation_record WHERE id = ANY (m.left_ids)),
                   (SELECT array_agg(external_id) FROM reconciliation_record WHERE id = ANY (m.right_ids))
            FROM reconciliation_match m WHERE m.job_id = %s AND m.status = %s
            """,
            [job.pk, status],
        )
        return [(frozenset(left), frozenset(right)) for left, right in cursor.fetchall()]


def summary_latency(execution: Execution, repeat: int) -> dict:
    user, _ = get_user_model().objects.get_or_create(username="bench-reconciliation")
    TenantMembership.objects.get_or_create(
        tenant_id=execution.tenant_id, user=user, defaults={"role": TenantMembership.Role.VIEWER}
    )
    # The view's own cost, not the per-user throttle (100/min) a benchmark would run into.
    view, factory = ExecutionSummaryView.as_view(throttle_classes=()), APIRequestFactory()
    url = f"/api/v1/reconciliations/{execution.pk}/summary"
    figures = {}
    for variant in ("cached", "uncached"):
        timings = []
        for _ in range(repeat):
            if variant == "uncached":
                cache.clear()
            user = get_user_model().objects.get(pk=user.pk)  # a new request: no memoized memberships
            elapsed_ms, _ = timed_request(view, factory.get(url), user, pk=execution.pk)
            timings.append(elapsed_ms)
        figures[variant] = {
            "median_ms": round(statistics.median(timings), 3),
            "p95_ms": round(percentile(timings, 0.95), 3),
        }
    return figures


def bench_size(n_left: int, *, seed: int, baseline_sample: int, repeat: int) -> dict:
    data = dataset(n_left, seed)
    job = fresh_job(n_left)
    try:
        started = time.perf_counter()
        with open(data.left_csv, "rb") as left:
            left_result = records_ingest(job=job, csv_stream=left, side="left")
        with open(data.right_csv, "rb") as right:
            right_result = records_ingest(job=job, csv_stream=right, side="right")
        ingest_s = time.perf_counter() - started
        records = left_result.inserted + right_result.inserted
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE reconciliation_record")  # as autovacuum would after a big load

        execution = Execution.objects.create(tenant_id=job.tenant_id, job=job)
        started = time.perf_counter()
        jobs.run_execution.run_now({"execution_id": execution.pk})
        match_s = time.perf_counter() - started
        # The worker's peak: ingest and match ran in this process; scoring (below) reads every
        # match into Python, which a worker never does.
        worker_rss_mb = rss_peak_mb()
        execution.refresh_from_db()
        assert execution.status == Execution.Status.SUCCEEDED, execution.error

        auto = score(data.truth_csv, predicted_pairs(job, Match.Status.AUTO))
        suggested = len(predicted_pairs(job, Match.Status.SUGGESTED))
        latency = summary_latency(execution, repeat)
    finally:
        drop_job(job)

    baseline = baseline_match(data.left_csv, data.right_csv, sample_left=min(baseline_sample, n_left))
    sample_ids = baseline.sample_left_ids or []
    baseline_quality = score(data.truth_csv, baseline.pairs, within_left=sample_ids)
    return {
        "n_left": data.n_left,
        "n_right": data.n_right,
        "records": records,
        "ingest_s": round(ingest_s, 2),
        "ingest_records_per_s": round(records / ingest_s),
        "match_s": round(match_s, 2),
        "end_to_end_s": round(ingest_s + match_s, 2),
        "passes": execution.summary["passes"],
        "match_rate": execution.summary["match_rate"],
        "auto": {
            "precision": round(auto.precision, 5),
            "recall": round(auto.recall, 5),
            "tp": auto.tp,
            "fp": auto.fp,
            "fn": auto.fn,
            "neutral": auto.neutral,
        },
        "suggested_matches": suggested,
        "open_by_reason": execution.summary["open_by_reason"],
        "worker_peak_rss_mb": round(worker_rss_mb, 1),
        "summary_endpoint": latency,
        "baseline": {
            "sample_left": baseline.sample_size,
            "measured_s": round(baseline.seconds_measured, 2),
            "load_s": round(baseline.load_seconds, 2),
            "extrapolated_full_s": round(baseline.extrapolated_seconds_full, 1),
            "extrapolated_full_cpu_s": round(baseline.extrapolated_cpu_seconds_full, 1),
            "precision_on_sample": round(baseline_quality.precision, 5),
            "recall_on_sample": round(baseline_quality.recall, 5),
            "peak_rss_mb": round(baseline.peak_rss_mb, 1),
        },
    }


def print_table(result: dict) -> None:
    base = result["baseline"]
    rows = [
        ("records ingested", f"{result['records']:,}", ""),
        (
            "ingest",
            f"{result['ingest_s']} s ({result['ingest_records_per_s']:,} records/s)",
            f"{base['load_s']} s to load the CSVs into dicts",
        ),
        (
            "match",
            f"{result['match_s']} s",
            f"{base['extrapolated_full_s']} s "
            f"(measured {base['measured_s']} s on {base['sample_left']:,} left, extrapolated)",
        ),
        ("end to end", f"{result['end_to_end_s']} s", ""),
        (
            "auto precision / recall",
            f"{result['auto']['precision']} / {result['auto']['recall']}",
            f"{base['precision_on_sample']} / {base['recall_on_sample']} (on its sample)",
        ),
        ("suggested for review", f"{result['suggested_matches']:,}", ""),
        ("peak RSS", f"{result['worker_peak_rss_mb']} MB (worker)", f"{base['peak_rss_mb']} MB"),
        (
            "summary p50 / p95 (cached)",
            f"{result['summary_endpoint']['cached']['median_ms']} / "
            f"{result['summary_endpoint']['cached']['p95_ms']} ms",
            "",
        ),
        (
            "summary p50 / p95 (uncached)",
            f"{result['summary_endpoint']['uncached']['median_ms']} / "
            f"{result['summary_endpoint']['uncached']['p95_ms']} ms",
            "",
        ),
    ]
    print(f"\n{result['n_left']:,} left x {result['n_right']:,} right")
    print(f"  {'measure':<30} {'Opsdeck':<42} baseline (Python, same run)")
    for name, ours, theirs in rows:
        print(f"  {name:<30} {ours:<42} {theirs}")
    print(f"  passes: {json.dumps({k: v['matches'] for k, v in result['passes'].items()})}")
    print(f"  open by reason: {json.dumps(result['open_by_reason'])}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="left records per run, comma-separated")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--baseline-sample", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=200, help="summary endpoint requests per variant")
    args = parser.parse_args()
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        result = bench_size(size, seed=args.seed, baseline_sample=args.baseline_sample, repeat=args.repeat)
        print_table(result)
        results.append(result)
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"reconciliation-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "results": results}, indent=2))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
