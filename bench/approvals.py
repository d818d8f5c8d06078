"""Benchmark: the approvals automation, bulk approve and the pending count, each beside a naive
baseline measured in the same run.

    make bench-approvals        # embedded PostgreSQL; seeds 1,000,000 pending versions if needed
    python bench/approvals.py --versions 1000000 --naive-sample 1000 --repeat 30

1. Automation: the whole backlog decided by the set-based job path (automation.automation_run,
   batches of AUTOMATION_BATCH_SIZE, SKIP LOCKED) under a 5-rule policy (one CASE per batch), with
   1 run and with AUTOMATION_MAX_CONCURRENT_RUNS runs in parallel. Baseline: the same policy
   evaluated in Python by the reference (first match), one version and one transaction at a time
   (load, evaluate, update, audit, apply), on a sample, extrapolated to the backlog.
1b. Backtest of the 5-rule policy over every decided version (one GROUP BY query), after the
   automation decided the backlog. Target < 10 s at 1M.
2. Bulk approve 500 through the API view: median and p95. Baseline: 500 single approvals through
   the same view, one request each (on a sample of versions).
3. The pending-count endpoint: median and p95 (cached, as served), and the uncached count.

Between the automation measurements every version is put back to pending (not timed).
Targets: backlog decided in < 60 s; backtest < 10 s; bulk approve 500 p95 < 50 ms; >= 100x naive.
Quick look on a shared machine: --versions 20000 --naive-sample 200 --repeat 20 (about a minute).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ.setdefault("SLOW_QUERY_MS", "100000")
os.environ.setdefault("LOG_LEVEL", "WARNING")
# Resetting a million versions between measurements takes longer than production's 30 s limit.
os.environ.setdefault("DB_STATEMENT_TIMEOUT_MS", "0")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.cache import cache  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402
from rest_framework.test import APIRequestFactory  # noqa: E402

from approvals import automation, backtest, rules, selectors, services  # noqa: E402
from approvals.api import PendingCountView, VersionViewSet  # noqa: E402
from approvals.models import ApprovalRule, AutomationAuditLog, Version  # noqa: E402
from approvals.policy import Policy, PolicyRule, first_match  # noqa: E402
from bench.timing import percentile, timed_request  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Real conditions (a join to the author's profile, the content length, a JSON tags test) that
# hold for every seeded version, so the whole backlog is decided.
# The policy: four narrow rules tried first (a tag, an entity type with a long content, a regex on
# the title, an author name), then the catch-all: every version pays for the whole CASE.
NARROW_RULES = [
    ("bench: leave flagged", "leave", {"field": "tags", "op": "contains", "value": "never-a-seeded-tag"}),
    (
        "bench: reject huge atoms",
        "reject",
        {
            "all": [
                {"field": "entity_type", "op": "eq", "value": "atom"},
                {"field": "content_length", "op": "gt", "value": 10**9},
            ]
        },
    ),
    ("bench: reject spam titles", "reject", {"field": "title", "op": "matches", "value": "^zz-never-spam"}),
    ("bench: leave one author", "leave", {"field": "author.username", "op": "eq", "value": "never-a-seeded-user"}),
]
BENCH_RULE = {
    "all": [
        {"field": "content_length", "op": "gte", "value": 0},
        {"field": "author.trust_level", "op": "gte", "value": 0},
        {"not": {"field": "tags", "op": "contains", "value": "never-a-seeded-tag"}},
    ]
}


def reset_backlog() -> None:
    """Every version back to pending, the audit log emptied: the starting line for a run."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Version._meta.db_table} SET status = 'pending', approved = false, decided_by_id = NULL, "
            "decided_by_rule_id = NULL, decided_by_rule_revision = NULL, decided_at = NULL, decision_reason = '', "
            "replaced_title = NULL, "
            "replaced_content = NULL, reverted_by_id = NULL, reverted_at = NULL WHERE status <> 'pending'"
        )
        cursor.execute(f"TRUNCATE {AutomationAuditLog._meta.db_table}")
        cursor.execute(f"VACUUM ANALYZE {Version._meta.db_table}")
    cache.clear()


def the_policy() -> Policy:
    """The 5-rule policy (not activated: the bench passes it to the runs itself)."""
    saved = []
    for priority, (name, action, conditions) in enumerate(
        [*NARROW_RULES, ("bench: approve everything seeded", "approve", BENCH_RULE)]
    ):
        rule, _ = ApprovalRule.objects.update_or_create(
            name=name, defaults={"conditions": conditions, "action": action, "priority": priority}
        )
        saved.append(PolicyRule.of(rule))
    return Policy.of(saved)


def backtest_s(policy: Policy) -> tuple[float, int]:
    started = time.perf_counter()
    result = backtest.policy_backtest(policy.live, days=3650)
    return time.perf_counter() - started, result.evaluated


def automation_throughput(policy: Policy, runs: int) -> tuple[float, int]:
    """Seconds to decide the whole backlog with `runs` automation runs in parallel."""
    pending_before = selectors.pending_count()
    results = []

    def one_run():
        try:
            results.append(
                automation.automation_run(policy=policy, batch_size=settings.AUTOMATION_BATCH_SIZE, deadline_s=None)
            )
        finally:
            connections.close_all()

    threads = [threading.Thread(target=one_run) for _ in range(runs)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    decided = sum(result.decided for result in results)
    assert decided == pending_before, (decided, pending_before)
    assert selectors.pending_count() == 0
    return elapsed, decided


def naive_per_version_s(policy: Policy, sample: int) -> float:
    """The baseline: Python evaluation, one version and one transaction at a time."""
    ids = list(
        Version.objects.filter(status="pending").order_by("created_at", "id").values_list("pk", flat=True)[:sample]
    )
    as_of = timezone.now()
    started = time.perf_counter()
    for version_id in ids:
        with transaction.atomic():
            version = Version.objects.select_for_update().select_related("author").get(pk=version_id)
            rule = first_match(policy.live, rules.version_facts(version, as_of=as_of))
            if rule is None or rule.action != "approve":
                continue
            version.status, version.approved = "approved", True
            version.decided_by_rule_id, version.decided_at = rule.id, timezone.now()
            version.decision_reason = "naive"
            version.save()
            AutomationAuditLog.objects.create(
                rule_id=rule.id,
                rule_revision=rule.revision,
                version_id=version.pk,
                decision="approved",
                reason="naive",
                duration_ms=0,
            )
            entity = services.ENTITY_MODELS[version.entity_type].objects.select_for_update().get(pk=version.entity_id)
            version.replaced_title, version.replaced_content = entity.title, entity.body
            version.save(update_fields=["replaced_title", "replaced_content"])
            entity.title, entity.body = version.title, version.content
            entity.save()
    return (time.perf_counter() - started) / len(ids)


def api_timings(view, factory, user, make_request, repeat: int) -> list[float]:
    return [timed_request(view, make_request(factory), user)[0] for _ in range(repeat)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=1_000_000)
    parser.add_argument("--naive-sample", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    # The guide's per-user limits would stop a benchmark of 500-version bulk approvals at once.
    settings.APPROVALS_PER_MINUTE = settings.REJECTIONS_PER_MINUTE = 10**9
    # Likewise the per-user request throttle: this measures the handler, not the limiter.
    VersionViewSet.throttle_classes = []

    existing = Version.objects.count()
    if existing < args.versions:
        print(f"seeding versions up to {args.versions:,} (have {existing:,})...", flush=True)
        started = time.perf_counter()
        call_command("seed_demo", "--versions", str(args.versions), verbosity=0)
        print(f"  seeded in {time.perf_counter() - started:.1f}s", flush=True)
    reset_backlog()
    policy = the_policy()
    user, _ = get_user_model().objects.get_or_create(username="bench", defaults={"is_superuser": True})
    user.is_superuser = True
    user.save()
    factory = APIRequestFactory()
    view = VersionViewSet.as_view

    # --- bulk approve 500 (API), and the naive one-request-per-version baseline ----------------
    oldest = list(Version.objects.order_by("created_at", "id").values_list("pk", flat=True)[: 500 * (args.repeat + 3)])
    chunks = iter([oldest[i : i + 500] for i in range(0, len(oldest), 500)])
    bulk_view = view({"post": "bulk_approve"})
    bulk_ms = api_timings(
        bulk_view,
        factory,
        user,
        lambda f: f.post("/api/v1/approvals/versions/bulk-approve/", {"ids": next(chunks)}, format="json"),
        args.repeat + 2,
    )[2:]
    single_view = view({"post": "approve"})
    single_ids = iter(next(chunks)[:100])
    single_ms = []
    for _ in range(100):
        version_id = next(single_ids)
        request = factory.post(f"/api/v1/approvals/versions/{version_id}/approve/", {}, format="json")
        single_ms.append(timed_request(single_view, request, user, pk=version_id)[0])
    naive_bulk_ms = statistics.median(single_ms) * 500

    # --- pending count ---------------------------------------------------------------------------
    PendingCountView.throttle_classes = []
    count_view = PendingCountView.as_view()
    count_ms = api_timings(count_view, factory, user, lambda f: f.get("/api/v1/approvals/pending-count/"), args.repeat)
    uncached_ms = []
    for _ in range(5):
        started = time.perf_counter()
        selectors.pending_count()
        uncached_ms.append((time.perf_counter() - started) * 1000)

    # --- automation --------------------------------------------------------------------------------
    reset_backlog()
    naive_s = naive_per_version_s(policy, args.naive_sample)
    reset_backlog()
    backlog = selectors.pending_count()
    one_run_s, decided = automation_throughput(policy, runs=1)
    reset_backlog()
    parallel = settings.AUTOMATION_MAX_CONCURRENT_RUNS
    parallel_s, _ = automation_throughput(policy, runs=parallel)
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {Version._meta.db_table}")
    backtest_seconds, backtested = backtest_s(policy)
    naive_backlog_s = naive_s * backlog
    best_s = min(one_run_s, parallel_s)

    result = {
        "benchmark": "approvals",
        "measured_at": datetime.now(UTC).isoformat(),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": backlog,
        "batch_size": settings.AUTOMATION_BATCH_SIZE,
        "automation": {
            "one_run_s": one_run_s,
            "one_run_versions_per_s": decided / one_run_s,
            f"{parallel}_runs_s": parallel_s,
            f"{parallel}_runs_versions_per_s": decided / parallel_s,
            "naive_per_version_ms": naive_s * 1000,
            "naive_sample": args.naive_sample,
            "naive_backlog_s_extrapolated": naive_backlog_s,
            "speedup_vs_naive": naive_backlog_s / best_s,
        },
        "backtest": {"policy_rules": len(policy.live), "decided_versions": backtested, "s": backtest_seconds},
        "bulk_approve_500_ms": {"median": statistics.median(bulk_ms), "p95": percentile(bulk_ms, 0.95)},
        "naive_500_single_approvals_ms": naive_bulk_ms,
        "pending_count_ms": {
            "median": statistics.median(count_ms),
            "p95": percentile(count_ms, 0.95),
            "uncached_median": statistics.median(uncached_ms),
        },
    }
    result["targets_met"] = {
        "backlog_under_60s": best_s < 60,
        "backtest_under_10s": backtest_seconds < 10,
        "bulk_p95_under_50ms": result["bulk_approve_500_ms"]["p95"] < 50,
        "automation_100x_naive": result["automation"]["speedup_vs_naive"] >= 100,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"approvals-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2))

    a = result["automation"]
    print(f"\napprovals with {backlog:,} pending versions, batch {settings.AUTOMATION_BATCH_SIZE}")
    print(f"{'measure':<46}{'Opsdeck':>14}{'baseline':>18}")
    print(f"{'automation, whole backlog, 1 run (s)':<46}{one_run_s:>14.1f}{naive_backlog_s:>18.0f}")
    print(f"{f'automation, whole backlog, {parallel} runs (s)':<46}{parallel_s:>14.1f}{'':>18}")
    print(f"{f'backtest, 5-rule policy, {backtested:,} decided (s)':<46}{backtest_seconds:>14.2f}{'':>18}")
    print(f"{'automation throughput (versions/s)':<46}{decided / best_s:>14,.0f}{1 / naive_s:>18,.0f}")
    print(
        f"{'bulk approve 500, median (ms)':<46}{result['bulk_approve_500_ms']['median']:>14.1f}{naive_bulk_ms:>18.0f}"
    )
    print(f"{'bulk approve 500, p95 (ms)':<46}{result['bulk_approve_500_ms']['p95']:>14.1f}{'':>18}")
    print(
        f"{'pending count endpoint, median / p95 (ms)':<46}"
        f"{result['pending_count_ms']['median']:>7.2f} /{result['pending_count_ms']['p95']:>5.2f}"
        f"{result['pending_count_ms']['uncached_median']:>18.1f}"
    )
    print(f"\nspeedup vs naive: {a['speedup_vs_naive']:,.0f}x   targets: {result['targets_met']}")
    print(f"-> {out.relative_to(RESULTS_DIR.parent.parent)}")
    return 0 if all(result["targets_met"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
