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
from concurrent.futures import ThreadPoolExecutor
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
from django.db import connection, transaction  # noqa: E402
from rest_framework.test import APIRequestFactory  # noqa: E402

from bench.recon_baseline import baseline_match  # noqa: E402
from bench.recon_data import CSV_COLUMNS, GENERATOR_VERSION, load_generated, read_truth, score  # noqa: E402
from bench.recon_quality import calibration, calibration_lines  # noqa: E402
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
    if (
        generated is not None
        and json.loads(generated.meta_json.read_text()).get("generator_version") != GENERATOR_VERSION
    ):
        generated = None  # made by an older generator (without the newer traps): made again
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


def copy_floor(csv_path: Path) -> float:
    """Seconds to COPY the CSV's bytes into a bare text table (no checks, no indexes, rolled
    back): the least any ingest of this file can cost on this machine and database."""
    columns = ", ".join(f"{name} text" for name in CSV_COLUMNS)
    with transaction.atomic(), connection.cursor() as django_cursor:
        cursor = django_cursor.cursor
        cursor.execute(f"CREATE TEMP TABLE copy_floor ({columns}) ON COMMIT DROP")
        started = time.perf_counter()
        with open(csv_path, "rb") as f, cursor.copy("COPY copy_floor FROM STDIN WITH (FORMAT csv, HEADER)") as copy:
            while chunk := f.read(1 << 20):
                copy.write(chunk)
        seconds = time.perf_counter() - started
        transaction.set_rollback(True)
    return seconds


def scored_matches(job: ReconciliationJob):
    """(left external ids, right external ids, confidence) of every proposed match."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT (SELECT array_agg(external_id) FROM reconciliation_record WHERE id = ANY (m.left_ids)),
                   (SELECT array_agg(external_id) FROM reconciliation_record WHERE id = ANY (m.right_ids)),
                   m.confidence
            FROM reconciliation_match m WHERE m.job_id = %s AND m.status IN ('auto', 'suggested')
            """,
            [job.pk],
        )
        return cursor.fetchall()


def trap_outcomes(job: ReconciliationJob, truth_csv: Path) -> dict:
    """What became of issue 13's traps: currency twins filed currency_mismatch, near strangers
    left alone, zero-padded exact pairs found by the exact pass."""
    twins, strangers = set(), set()
    for kind, left, right in read_truth(truth_csv):
        if kind == "currency_twin":
            twins.update(left + right)
        elif kind == "near_stranger":
            strangers.update(left + right)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT r.external_id, u.reason FROM reconciliation_unmatched u
            JOIN reconciliation_record r ON r.id = u.record_id WHERE u.job_id = %s AND u.resolved_at IS NULL
            """,
            [job.pk],
        )
        reasons = dict(cursor.fetchall())
        cursor.execute(
            """
            SELECT count(*) FROM reconciliation_match m JOIN reconciliation_record r ON r.id = m.left_ids[1]
            WHERE m.job_id = %s AND m.pass_name = 'exact'
              AND split_part(r.reference, '-', 2) LIKE '000%%'
            """,
            [job.pk],
        )
        padded_exact = cursor.fetchone()[0]
    proposed = {i for left, right, _ in scored_matches(job) for i in (*left, *right)}
    return {
        "currency_twin_records": len(twins),
        "currency_twins_filed_currency_mismatch": sum(reasons.get(i) == "currency_mismatch" for i in twins),
        "near_stranger_records": len(strangers),
        "near_strangers_proposed": len(strangers & proposed),
        "zero_padded_pairs_matched_exact": padded_exact,
    }


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


def ingest_both(job: ReconciliationJob, left_csv: Path, right_csv: Path, *, concurrent: bool) -> dict:
    """Upload both sides, one after the other or at once (two connections, as two API requests
    would): {side: (IngestResult, seconds of that upload)}."""

    def upload(side: str, path: Path):
        try:
            started = time.perf_counter()
            with open(path, "rb") as f:
                result = records_ingest(job=job, csv_stream=f, side=side)
            return result, time.perf_counter() - started
        finally:
            if concurrent:
                connection.close()  # this thread's own connection

    if not concurrent:
        return {"left": upload("left", left_csv), "right": upload("right", right_csv)}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {"left": pool.submit(upload, "left", left_csv), "right": pool.submit(upload, "right", right_csv)}
        return {side: future.result() for side, future in futures.items()}


def bench_size(n_left: int, *, seed: int, baseline_sample: int, repeat: int, concurrent_uploads: bool) -> dict:
    data = dataset(n_left, seed)
    floor_s = copy_floor(data.left_csv) + copy_floor(data.right_csv)
    job = fresh_job(n_left)
    try:
        started = time.perf_counter()
        uploads = ingest_both(job, data.left_csv, data.right_csv, concurrent=concurrent_uploads)
        ingest_s = time.perf_counter() - started
        records = sum(result.inserted for result, _ in uploads.values())
        per_upload_rate = min(result.inserted / seconds for result, seconds in uploads.values())
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
        buckets = calibration(data.truth_csv, scored_matches(job))
        traps = trap_outcomes(job, data.truth_csv)
        latency = summary_latency(execution, repeat)
    finally:
        drop_job(job)

    if baseline_sample:
        baseline = baseline_match(data.left_csv, data.right_csv, sample_left=min(baseline_sample, n_left))
        baseline_quality = score(data.truth_csv, baseline.pairs, within_left=baseline.sample_left_ids or [])
        baseline_figures = {
            "sample_left": baseline.sample_size,
            "measured_s": round(baseline.seconds_measured, 2),
            "load_s": round(baseline.load_seconds, 2),
            "extrapolated_full_s": round(baseline.extrapolated_seconds_full, 1),
            "extrapolated_full_cpu_s": round(baseline.extrapolated_cpu_seconds_full, 1),
            "precision_on_sample": round(baseline_quality.precision, 5),
            "recall_on_sample": round(baseline_quality.recall, 5),
            "peak_rss_mb": round(baseline.peak_rss_mb, 1),
        }
    else:  # --baseline-sample 0: at 10M the in-memory script needs ~14 GB
        baseline_figures = dict.fromkeys(
            ("sample_left", "measured_s", "load_s", "extrapolated_full_s", "extrapolated_full_cpu_s"), 0
        ) | {"precision_on_sample": "-", "recall_on_sample": "-", "peak_rss_mb": "-"}
    return {
        "n_left": data.n_left,
        "n_right": data.n_right,
        "records": records,
        "ingest_s": round(ingest_s, 2),
        "ingest_records_per_s": round(records / ingest_s),
        "ingest_slowest_upload_records_per_s": round(per_upload_rate),
        "uploads_concurrent": concurrent_uploads,
        "match_s": round(match_s, 2),
        "end_to_end_s": round(ingest_s + match_s, 2),
        "copy_floor_s": round(floor_s, 2),
        "copy_floor_records_per_s": round(records / floor_s),
        "end_to_end_over_baseline": round((ingest_s + match_s) / baseline_figures["extrapolated_full_s"], 3)
        if baseline_sample
        else "no baseline run: -",
        "calibration": [bucket.as_dict() for bucket in buckets],
        "calibration_lines": calibration_lines(buckets),
        "traps": traps,
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
        "baseline": baseline_figures,
    }


def print_table(result: dict) -> None:
    base = result["baseline"]
    rows = [
        ("records ingested", f"{result['records']:,}", ""),
        (
            "ingest",
            f"{result['ingest_s']} s ({result['ingest_records_per_s']:,} records/s"
            f"{', both uploads at once' if result['uploads_concurrent'] else ''}; slowest upload "
            f"{result['ingest_slowest_upload_records_per_s']:,}/s)",
            f"{base['load_s']} s to load the CSVs into dicts",
        ),
        (
            "COPY floor (no checks)",
            f"{result['copy_floor_s']} s ({result['copy_floor_records_per_s']:,} records/s)",
            "",
        ),
        (
            "match",
            f"{result['match_s']} s",
            f"{base['extrapolated_full_s']} s "
            f"(measured {base['measured_s']} s on {base['sample_left']:,} left, extrapolated)",
        ),
        (
            "end to end",
            f"{result['end_to_end_s']} s ({result['end_to_end_over_baseline']}x the baseline)",
            f"{base['extrapolated_full_s']} s (load + match)",
        ),
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
    # Each pass's own time: compared across sizes, how each step of the plan grows with n.
    print(f"  pass seconds: {json.dumps({k: v.get('duration_ms', 0) / 1000 for k, v in result['passes'].items()})}")
    print(f"  open by reason: {json.dumps(result['open_by_reason'])}")
    print(f"  traps: {json.dumps(result['traps'])}")
    print("  calibration of proposed matches (auto and suggested) against the truth:")
    for line in result["calibration_lines"]:
        print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="left records per run, comma-separated")
    parser.add_argument("--sequential-uploads", action="store_true", help="left, then right (default: both at once)")
    parser.add_argument("--records", dest="sizes", help="the same as --sizes (e.g. --records 1000000)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--baseline-sample", type=int, default=10_000, help="left records the Python baseline matches; 0: no baseline"
    )
    parser.add_argument("--repeat", type=int, default=200, help="summary endpoint requests per variant")
    args = parser.parse_args()
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        result = bench_size(
            size,
            seed=args.seed,
            baseline_sample=args.baseline_sample,
            repeat=args.repeat,
            concurrent_uploads=not args.sequential_uploads,
        )
        print_table(result)
        results.append(result)
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"reconciliation-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "results": results}, indent=2))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
