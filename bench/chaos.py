"""`make chaos`: scripted faults against a running Opsdeck stack under a steady mixed load.

    python bench/chaos.py [--port 8765] [--recon-left 100000] [--beat-slots 2]

Starts its own stack (bench/chaos_stack.py: embedded PostgreSQL and Redis, gunicorn with 2
workers, a Celery worker, beat), a steady load (bench/chaos_load.py: task list/detail reads, task
creates, small reconciliation ingests, /health probes) and a webhook receiver on 127.0.0.1, then
runs the faults one after the other, each with its assertions:

  postgres restart   `pg_ctl restart -m fast` mid-load
  gunicorn HUP       `kill -HUP` of the gunicorn master
  worker child kill  SIGKILL of the pool child running a reconciliation execution
  redis pause        SIGSTOP of redis-server for 20 s, with task webhooks configured
  second beat        a second `celery beat` for --beat-slots full minute-slots

and prints one table (docs/testing.md says how to read it), also written to
bench/results/chaos-<UTC timestamp>.txt. Exits 1 when a fault fails its assertions, 2 when the
harness itself could not run. Every process it started is stopped on the way out. Linux only.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.chaos_load import Load, Request, WebhookReceiver  # noqa: E402
from bench.chaos_stack import Stack, alive, log  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
DATA_DIR = ROOT / "var" / "bench"
RECOVERY_MAX_S = 5.0  # PostgreSQL restart: errors stop within this of the restart completing
FAST_503_MAX_S = 5.0  # Redis pause: a refused write answers within this (today's hang is 20-27 s)
HEALTH_P95_MAX_MS = 100.0  # the "/health within 100 ms"
HEALTH_MAX_MS = 1000.0  # single worst probe: the machine is shared, one slow probe is not an outage
# Acknowledged side effects run within this of Redis coming back: the outbox relay runs every
# minute and takes messages at least OUTBOX_RELAY_AFTER_S (10 s) old, so up to ~70 s plus the job.
SIDE_EFFECT_WAIT_S = 90
REDELIVERY_WAIT_S = 60  # a killed execution finishes within this of the worker's return
MINUTELY_JOBS = ("approvals.run_automation", "monitoring.sample_metrics", "monitoring.inspect_workers")


@dataclass
class Check:
    what: str
    ok: bool
    evidence: str


@dataclass
class FaultResult:
    name: str
    start: float  # the window judged: requests that overlap [start, end]
    end: float
    fault_end: float  # when the fault itself was lifted (recovery is measured from here)
    acked_writes: int = 0
    lost_writes: int = 0
    checks: list[Check] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    recovery_override_s: float | None = None
    lost_side_effects: int = 0  # acknowledged side effects that never ran (webhooks, executions)

    def check(self, what: str, ok: bool, evidence: str) -> None:
        self.checks.append(Check(what, bool(ok), evidence))

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def server_errors(self) -> list[Request]:
        return [r for r in self.requests if r.status is not None and r.status >= 500]

    @property
    def other_errors(self) -> list[Request]:
        return [r for r in self.requests if r.status is None or 300 <= r.status < 500]

    @property
    def recovery_s(self) -> float:
        if self.recovery_override_s is not None:
            return self.recovery_override_s
        failed_ends = [r.ended for r in self.requests if not r.ok and r.kind != "health"]
        return max([0.0, *(end - self.fault_end for end in failed_ends)])


def overlapping(requests: list[Request], start: float, end: float) -> list[Request]:
    return [r for r in requests if r.started <= end and r.ended >= start]


def describe(requests: list[Request], limit: int = 6) -> str:
    """`kind status xN (slowest Ns)` per kind and status, and what the first refusals said."""
    counts: dict[str, list[Request]] = {}
    for r in requests:
        counts.setdefault(f"{r.kind} {r.status if r.status is not None else r.error}", []).append(r)
    if not counts:
        return "none"
    parts = [
        f"{label} x{len(group)} (slowest {max(r.duration_s for r in group):.1f}s)"
        for label, group in sorted(counts.items())[:limit]
    ]
    said = sorted({r.error.replace(chr(10), " ")[:120] for r in requests if r.status is not None and r.error})[:3]
    return ", ".join(parts) + (f"; bodies: {' | '.join(said)}" if said else "")


class Chaos:
    def __init__(self, args):
        self.args = args
        self.receiver = WebhookReceiver()
        # Its own directory, wiped at every start: never the var/ of `make run`.
        var_dir = Path(os.environ.get("CHAOS_VAR_DIR") or ROOT / "var" / "chaos")
        self.stack = Stack(var_dir=var_dir, port=args.port, webhook_url=self.receiver.url)
        self.load: Load | None = None
        self.setup: dict = {}
        self.results: list[FaultResult] = []
        self.started = time.time()
        self.pg_restarted_at: float | None = None
        self.notes: list[str] = []

    # --- helpers -----------------------------------------------------------------------------------

    def missing_tasks(self, task_ids) -> set[int]:
        ids = sorted(task_ids)
        if not ids:
            return set()
        found = {row[0] for row in self.stack.query("SELECT id FROM tasks_task WHERE id = ANY(%s)", [ids])}
        return set(ids) - found

    def missing_records(self, external_ids) -> set[str]:
        ids = sorted(external_ids)
        if not ids:
            return set()
        rows = self.stack.query(
            "SELECT external_id FROM reconciliation_record WHERE job_id = %s AND external_id = ANY(%s)",
            [self.setup["load_job_id"], ids],
        )
        return set(ids) - {row[0] for row in rows}

    def committed_but_refused(self, start: float, end: float) -> list[tuple[str, Request]]:
        """Creates answered without a 2xx (5xx, hang, reset) whose task was committed all the same."""
        refused = [(t, r) for t, r in self.load.refused_tasks if r.started <= end and r.ended >= start]
        if not refused:
            return []
        titles = [t for t, _ in refused]
        found = {row[0] for row in self.stack.query("SELECT title FROM tasks_task WHERE title = ANY(%s)", [titles])}
        return [(t, r) for t, r in refused if t in found]

    def judge_writes(self, result: FaultResult) -> None:
        """Acknowledged writes of the window exist in the database."""
        tasks = [t.id for t in self.load.acked_tasks.values() if result.start <= t.acked_at <= result.end]
        records = [e for e, at in self.load.acked_records.items() if result.start <= at <= result.end]
        missing = len(self.missing_tasks(tasks)) + len(self.missing_records(records))
        result.acked_writes = len(tasks) + len(records)
        result.lost_writes = missing + result.lost_side_effects
        result.check(
            "every write acknowledged with a 2xx exists afterwards",
            missing == 0,
            f"{len(tasks)} task creates + {len(records)} record ingests acknowledged, {missing} missing",
        )
        committed = self.committed_but_refused(result.start, result.end)
        result.check(
            "no committed write answered without a 2xx (a client retry would duplicate it)",
            not committed,
            f"{len(committed)} creates committed but answered "
            + (describe([r for _, r in committed]) if committed else "-"),
        )

    def api(self, method: str, url: str, **kwargs):
        with self.load.client() as client:
            return client.request(method, url, **kwargs)

    def execution(self, execution_id: int) -> dict:
        row = self.stack.query(
            "SELECT status, attempts, started_at, finished_at, passes_done, error "
            "FROM reconciliation_execution WHERE id = %s",
            [execution_id],
        )[0]
        return dict(zip(("status", "attempts", "started_at", "finished_at", "passes_done", "error"), row, strict=True))

    def wait_execution(self, execution_id: int, deadline: float, *, until=("succeeded", "failed", "cancelled")) -> dict:
        while True:
            state = self.execution(execution_id)
            if state["status"] in until or time.time() > deadline:
                return state
            time.sleep(0.2)

    def matches(self, job_id: int) -> set[tuple]:
        rows = self.stack.query(
            """
            SELECT m.status,
                   (SELECT array_agg(external_id ORDER BY external_id)
                    FROM reconciliation_record WHERE id = ANY (m.left_ids)),
                   (SELECT array_agg(external_id ORDER BY external_id)
                    FROM reconciliation_record WHERE id = ANY (m.right_ids))
            FROM reconciliation_match m WHERE m.job_id = %s
            """,
            [job_id],
        )
        return {(status, tuple(left or ()), tuple(right or ())) for status, left, right in rows}

    def finish(self, result: FaultResult) -> FaultResult:
        self.load.wait_settled(since=result.end)
        result.requests = overlapping(self.load.snapshot(), result.start, result.end)
        self.judge_writes(result)
        self.results.append(result)
        log(f"{result.name}: {'PASS' if result.passed else 'FAIL'}")
        return result

    # --- setup ---------------------------------------------------------------------------------

    def prepare(self) -> None:
        self.receiver.start()
        self.setup = self.stack.start()
        self.load = Load(
            base_url=self.stack.base_url,
            token=self.setup["token"],
            project_id=self.setup["project_id"],
            load_job_id=self.setup["load_job_id"],
        )
        self.ingest_reconciliation_data()
        self.load.start()
        time.sleep(5)  # the load reaches its steady mix before the first fault

    def ingest_reconciliation_data(self) -> None:
        """The same generated data set into the clean job and the job whose worker gets killed."""
        out = DATA_DIR / f"recon-{self.args.recon_left}-42"
        if not (out / "meta.json").exists():
            subprocess.run(
                [sys.executable, str(ROOT / "bench" / "recon_data.py"), "--left", str(self.args.recon_left),
                 "--seed", "42", "--out", str(out)],
                check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
        started = time.monotonic()
        with self.load.client() as client:
            for job_id in (self.setup["clean_job_id"], self.setup["kill_job_id"]):
                for side in ("left", "right"):
                    with open(out / f"{side}.csv", "rb") as csv_file:
                        response = client.post(
                            f"/api/v1/reconciliations/jobs/{job_id}/records/?side={side}",
                            content=csv_file,
                            headers={"Content-Type": "text/csv"},
                            timeout=600,
                        )
                    if response.status_code not in (200, 201):
                        raise RuntimeError(
                            f"ingest into job {job_id} ({side}) answered {response.status_code}: {response.text[:500]}"
                        )
        log(f"ingested {self.args.recon_left:,}-left data set into two jobs in {time.monotonic() - started:.1f}s")

    # --- faults --------------------------------------------------------------------------------

    def fault_postgres_restart(self) -> FaultResult:
        pids = {role: proc.pid for role, proc in self.stack.processes.items()}
        start = time.time()
        windows = []  # (restart started, restart done)
        # A request fails only if it is in a query at the moment of the restart: several restarts
        # give the fault a fair chance to hit some.
        for _ in range(self.args.pg_restarts):
            time.sleep(4)
            restart_start = time.time()
            self.stack.pg_restart()
            windows.append((restart_start, time.time()))
            log(f"postgres restarted in {windows[-1][1] - restart_start:.1f}s")
        fault_end = windows[-1][1]
        self.pg_restarted_at = fault_end
        time.sleep(8)
        result = FaultResult(f"postgres restart x{len(windows)}", start, time.time(), fault_end)
        self.load.wait_settled(since=result.end)
        requests = overlapping(self.load.snapshot(), start, result.end)
        failed = [r for r in requests if not r.ok and r.kind != "health"]

        def window_of(r: Request):
            """The restart a failed request belongs to: the last one begun before it ended, if the
            request started at most RECOVERY_MAX_S after that restart was done."""
            begun = [w for w in windows if w[0] <= r.ended]
            return begun[-1] if begun and r.started <= begun[-1][1] + RECOVERY_MAX_S else None

        outside = [r for r in failed if window_of(r) is None]
        result.check(
            "errors only inside the restart windows",
            not outside,
            f"restarts took {', '.join(f'{b - a:.2f}s' for a, b in windows)}; failed requests outside them: "
            f"{describe(outside)}",
        )
        result.check(
            "failures during a restart are 503, never 500 or a dropped connection",
            all(r.status == 503 for r in failed),
            f"failed requests: {describe(failed)}",
        )
        recovery = max([0.0, *(r.ended - window_of(r)[1] for r in failed if window_of(r))])
        result.recovery_override_s = recovery
        result.check(f"recovery < {RECOVERY_MAX_S:.0f}s", recovery < RECOVERY_MAX_S, f"{recovery:.2f}s after a restart")
        # The worker is back when it delivers the webhook of a task created after the restart (the
        # delivery job reads the task from the database); beat is judged at the end of the run.
        after = [t for t in self.load.acked_tasks.values() if t.started > fault_end + 1]
        deadline = time.time() + 30
        delivered = False
        while after and time.time() < deadline and not delivered:
            delivered = any(t.id in self.receiver.created_deliveries() for t in after)
            time.sleep(0.5)
        result.check(
            "the worker serves jobs again without a restart",
            delivered and alive(pids["worker"]) and self.stack.processes["worker"].pid == pids["worker"],
            f"webhook of a task created after the restart delivered: {delivered}; "
            f"worker pid {pids['worker']} alive: {alive(pids['worker'])}",
        )
        return self.finish(result)

    def fault_gunicorn_hup(self) -> FaultResult:
        master = self.stack.processes["web"].pid
        before = sorted(self.stack.web_worker_pids())
        start = time.time()
        time.sleep(3)
        os.kill(master, signal.SIGHUP)
        fault_end = time.time()
        time.sleep(12)
        after = sorted(self.stack.web_worker_pids())
        result = FaultResult("gunicorn HUP", start, time.time(), fault_end)
        self.load.wait_settled(since=result.end)
        requests = overlapping(self.load.snapshot(), start, result.end)
        failed = [r for r in requests if not r.ok]
        slowest = max((r.duration_s for r in requests), default=0)
        result.check(
            "no 5xx and no connection reset",
            not failed,
            f"failed requests: {describe(failed)}; slowest request {slowest:.1f}s",
        )
        result.check(
            "the workers were replaced and the master kept its pid",
            alive(master) and before != after and len(after) == 2,
            f"master {master} alive: {alive(master)}; workers {before} -> {after}",
        )
        return self.finish(result)

    def fault_worker_child_kill(self) -> FaultResult:
        start = time.time()
        clean = self.api("POST", f"/api/v1/reconciliations/jobs/{self.setup['clean_job_id']}/run/", json={})
        if clean.status_code != 202:
            raise RuntimeError(f"clean run answered {clean.status_code}: {clean.text[:300]}")
        clean_state = self.wait_execution(clean.json()["id"], time.time() + 300)
        clean_s = (
            (clean_state["finished_at"] - clean_state["started_at"]).total_seconds()
            if clean_state["finished_at"]
            else None
        )
        log(f"clean run: {clean_state['status']} in {clean_s}s")
        result = FaultResult("worker child SIGKILL", start, start, start)
        if clean_state["status"] != "succeeded":
            result.check("clean reference run succeeds", False, f"{clean_state}")
            result.end = result.fault_end = time.time()
            return self.finish(result)

        run = self.api("POST", f"/api/v1/reconciliations/jobs/{self.setup['kill_job_id']}/run/", json={})
        execution_id = run.json()["id"]
        running = self.wait_execution(execution_id, time.time() + 60, until=("running", "succeeded", "failed"))
        victims = []
        for jobs in self.stack.active_jobs().values():
            victims += [j["worker_pid"] for j in jobs if j.get("name") == "reconciliation.run_execution"]
        before_kill = self.execution(execution_id)
        pool_before = self.stack.worker_pool_pids()
        if not victims:  # inspect did not answer: every pool child is a candidate
            victims = pool_before
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        log(f"SIGKILLed worker child(ren) {victims} with execution {execution_id} {before_kill['status']} "
            f"(passes done {before_kill['passes_done']})")  # fmt: skip
        result.check(
            "the execution was running when its worker child was killed",
            running["status"] == "running" and before_kill["status"] == "running",
            f"status at kill: {before_kill['status']}, passes done {before_kill['passes_done']}; "
            f"clean run took {clean_s:.1f}s",
        )
        deadline = time.time() + 30
        while time.time() < deadline and (
            len(self.stack.worker_pool_pids()) < len(pool_before) or set(victims) & set(self.stack.worker_pool_pids())
        ):
            time.sleep(0.1)
        returned_at = time.time()
        final = self.wait_execution(execution_id, returned_at + REDELIVERY_WAIT_S)
        finished_in = time.time() - returned_at
        result.check(
            f"redelivered and finished within {REDELIVERY_WAIT_S}s of the worker's return",
            final["status"] == "succeeded",
            f"pool back {returned_at - killed_at:.1f}s after the kill; execution {final['status']} "
            f"(attempts {final['attempts']}) {finished_in:.1f}s after it",
        )
        if final["status"] == "succeeded":
            clean_matches = self.matches(self.setup["clean_job_id"])
            killed_matches = self.matches(self.setup["kill_job_id"])
            result.check(
                "same matches as the clean run",
                clean_matches == killed_matches,
                f"clean {len(clean_matches)}, killed run {len(killed_matches)}, differing "
                f"{len(clean_matches ^ killed_matches)}",
            )
        stuck = self.stack.query(
            "SELECT id, name, started_at FROM project_jobrun "
            "WHERE status = 'running' AND name = 'reconciliation.run_execution'"
        )
        result.check("no JobRun left `running`", not stuck, f"running JobRuns of the execution job: {len(stuck)}")
        result.end = result.fault_end = time.time()
        return self.finish(result)

    def fault_redis_pause(self) -> FaultResult:
        pause_s = self.args.redis_pause_s
        run_attempts: list[tuple[Request, int | None]] = []
        run_jobs: list[int] = []
        lock = threading.Lock()

        def attempt_run(job_id: int) -> None:
            started = time.time()
            try:
                response = self.api("POST", f"/api/v1/reconciliations/jobs/{job_id}/run/", json={})
                request = Request("run", started, time.time(), response.status_code)
                execution_id = response.json().get("id") if response.status_code == 202 else None
            except Exception as error:
                request, execution_id = Request("run", started, time.time(), None, type(error).__name__), None
            with lock:
                run_attempts.append((request, execution_id))
                run_jobs.append(job_id)

        start = time.time()
        time.sleep(2)
        pause_start = time.time()
        self.stack.redis_stop()
        runners = []
        try:
            for n, job_id in enumerate(self.setup["redis_run_job_ids"]):
                time.sleep(1 if n == 0 else pause_s / len(self.setup["redis_run_job_ids"]) - 0.5)
                runner = threading.Thread(target=attempt_run, args=(job_id,), daemon=True)
                runner.start()
                runners.append(runner)
            time.sleep(max(0.0, pause_start + pause_s - time.time()))
        finally:
            self.stack.redis_cont()
        pause_end = time.time()
        log(f"redis paused {pause_end - pause_start:.1f}s")
        for runner in runners:
            runner.join(timeout=60)
        self.load.wait_settled(since=pause_end)
        time.sleep(3)
        result = FaultResult(f"redis pause {pause_s:.0f}s + webhooks", start, time.time(), pause_end)
        requests = overlapping(self.load.snapshot(), pause_start, pause_end) + [r for r, _ in run_attempts]
        reads = [r for r in requests if r.kind == "read"]
        writes = [r for r in requests if r.kind in ("create", "ingest", "run")]
        health = [r for r in requests if r.kind == "health" and pause_start <= r.started <= pause_end]
        bad_reads = [r for r in reads if r.status != 200]
        result.check(
            "reads answer 200",
            not bad_reads,
            f"{len(reads)} reads, slowest {max((r.duration_s for r in reads), default=0):.2f}s; "
            f"not 200: {describe(bad_reads)}",
        )
        slow_reads = [r for r in reads if r.duration_s > FAST_503_MAX_S]
        result.check(
            f"the web tier keeps answering: no read slower than {FAST_503_MAX_S:.0f}s",
            reads and not slow_reads,
            f"{len(reads)} reads overlapped the {pause_s:.0f}s pause, "
            f"{len(slow_reads)} slower than {FAST_503_MAX_S:.0f}s",
        )
        bad_writes = [r for r in writes if not ((r.ok or r.status == 503) and r.duration_s <= FAST_503_MAX_S)]
        result.check(
            f"writes succeed or answer 503, within {FAST_503_MAX_S:.0f}s (never 500, never a hang)",
            not bad_writes,
            f"{len(writes)} writes, slowest {max((r.duration_s for r in writes), default=0):.2f}s; "
            f"bad: {describe(bad_writes)}",
        )
        latencies = sorted(r.duration_s * 1000 for r in health if r.ok)
        p95 = latencies[int(len(latencies) * 0.95) - 1] if latencies else float("inf")
        result.check(
            f"/health answers within {HEALTH_P95_MAX_MS:.0f} ms (p95; none over {HEALTH_MAX_MS:.0f} ms)",
            health and len(latencies) == len(health) and p95 <= HEALTH_P95_MAX_MS and latencies[-1] <= HEALTH_MAX_MS,
            f"{len(health)} probes sent during the pause, {len(latencies)} answered 200; "
            + (
                f"p50 {latencies[len(latencies) // 2]:.0f} ms, p95 {p95:.0f} ms, max {latencies[-1]:.0f} ms"
                if latencies
                else "none answered"
            ),
        )
        # Side effects of writes acknowledged while Redis was away: each runs once, after it returns.
        acked = [t for t in self.load.acked_tasks.values() if t.started <= pause_end and t.acked_at >= pause_start]
        acked_runs = [eid for r, eid in run_attempts if eid is not None]
        deadline = pause_end + SIDE_EFFECT_WAIT_S
        while time.time() < deadline:
            delivered = self.receiver.created_deliveries()
            states = [self.execution(eid)["status"] for eid in acked_runs]
            if all(t.id in delivered for t in acked) and all(s == "succeeded" for s in states):
                break
            time.sleep(1)
        time.sleep(5)  # late duplicates show up too
        delivered = self.receiver.created_deliveries()
        missing = [t.id for t in acked if t.id not in delivered]
        duplicated = [t.id for t in acked if len(delivered.get(t.id, [])) > 1]
        same_key = [i for i in duplicated if len({d.idempotency_key for d in delivered[i]} - {""}) == 1]
        result.check(
            "every acknowledged create's webhook delivered exactly once (or repeated under one idempotency key)",
            not missing and set(duplicated) == set(same_key),
            f"{len(acked)} creates acknowledged across the pause; webhooks missing {len(missing)}, delivered more "
            f"than once {len(duplicated)} ({len(same_key)} of them under one idempotency key)",
        )
        refused_jobs = [job for (r, eid), job in zip(run_attempts, run_jobs, strict=True) if eid is None]
        stuck = self.stack.query(
            "SELECT id, job_id, status FROM reconciliation_execution WHERE job_id = ANY(%s) AND status <> 'succeeded'",
            [refused_jobs],
        )
        result.check(
            "a refused run leaves no execution behind that never runs",
            not stuck,
            f"{len(refused_jobs)} runs refused; their executions not succeeded: {stuck or 'none'}",
        )
        states = {eid: self.execution(eid)["status"] for eid in acked_runs}
        result.lost_side_effects = len(missing) + sum(1 for s in states.values() if s != "succeeded")
        result.check(
            f"every acknowledged run executes within {SIDE_EFFECT_WAIT_S}s of Redis' return",
            all(s == "succeeded" for s in states.values()),
            f"run attempts: {describe([r for r, _ in run_attempts])}; executions {states or '-'}",
        )
        result.end = time.time()
        return self.finish(result)

    def fault_second_beat(self) -> FaultResult:
        slots = self.args.beat_slots
        start = time.time()
        beat = self.stack.start_extra_beat()
        # Slots that both beats cover whole: from the first minute at least 10 s after its start.
        first_slot = (int(start + 10) // 60 + 1) * 60
        last_slot = first_slot + 60 * (slots - 1)
        log(f"second beat (pid {beat.pid}) until {datetime.fromtimestamp(last_slot + 30, UTC):%H:%M:%S}")
        while time.time() < last_slot + 30:
            time.sleep(1)
        beat_alive = beat.poll() is None
        self.stack.stop_extra_beat()
        fault_end = time.time()
        time.sleep(10)  # runs of the last slot finish
        result = FaultResult(f"second beat {slots} min", start, time.time(), fault_end)
        rows = self.stack.query(
            """
            SELECT name, date_trunc('minute', started_at) AS slot, count(*) FILTER (WHERE status <> 'skipped'), count(*)
            FROM project_jobrun
            WHERE started_at >= to_timestamp(%s) AND started_at < to_timestamp(%s)
            GROUP BY 1, 2 ORDER BY 2, 1
            """,
            [first_slot, last_slot + 60],
        )
        twice = [f"{name} @{slot:%H:%M} x{ran}" for name, slot, ran, _ in rows if ran > 1]
        ran = {(name, slot) for name, slot, n, _ in rows if n >= 1}
        expected = {
            (name, datetime.fromtimestamp(first_slot + 60 * n, UTC)) for name in MINUTELY_JOBS for n in range(slots)
        }
        result.check(
            "the second beat ran the whole time",
            beat_alive,
            f"second beat pid {beat.pid} alive at the end: {beat_alive}",
        )
        result.check(
            "every minutely job ran in every slot (the check saw work)",
            expected <= ran,
            f"missing: {sorted(f'{n} @{s:%H:%M}' for n, s in expected - ran) or 'none'}",
        )
        result.check("no job ran twice in one slot", not twice, f"ran twice: {', '.join(twice) or 'none'}")
        return self.finish(result)

    # --- the whole run -------------------------------------------------------------------------

    def final_checks(self, beat_fault_start: float | None) -> FaultResult:
        end = time.time()
        result = FaultResult("whole run", self.started, end, end)
        self.load.stop()
        result.requests = self.load.snapshot()
        missing_tasks = self.missing_tasks(self.load.acked_tasks)
        missing_records = self.missing_records(self.load.acked_records)
        result.acked_writes = len(self.load.acked_tasks) + len(self.load.acked_records)
        result.lost_writes = len(missing_tasks) + len(missing_records)
        result.check("no acknowledged write lost", result.lost_writes == 0, f"{result.lost_writes} missing")
        states = self.stack.processes_alive()
        result.check("web, worker and beat still run (nothing was restarted)", all(states.values()), f"{states}")
        if self.pg_restarted_at is not None:
            until = beat_fault_start or end
            rows = self.stack.query(
                "SELECT count(*) FROM project_jobrun WHERE name = ANY(%s) AND started_at > to_timestamp(%s) "
                "AND started_at < to_timestamp(%s)",
                [list(MINUTELY_JOBS), self.pg_restarted_at + 1, until],
            )
            minute_passed = int(until) // 60 > int(self.pg_restarted_at + 1) // 60
            for fault in self.results:
                if fault.name.startswith("postgres restart"):
                    fault.check(
                        "beat sends scheduled jobs again without a restart",
                        rows[0][0] > 0 or not minute_passed,
                        f"{rows[0][0]} minutely job runs between the restart and the second beat",
                    )
        stuck = self.stack.query(
            "SELECT name, count(*) FROM project_jobrun WHERE status = 'running' "
            "AND started_at < now() - interval '5 minutes' GROUP BY name"
        )
        result.check("no JobRun older than 5 minutes left `running`", not stuck, f"{stuck or 'none'}")
        self.results.append(result)
        return result

    def run(self) -> int:
        faults = {
            "postgres": self.fault_postgres_restart,
            "hup": self.fault_gunicorn_hup,
            "worker": self.fault_worker_child_kill,
            "redis": self.fault_redis_pause,
            "beat": self.fault_second_beat,
        }
        beat_start = None
        try:
            self.prepare()
            for name in self.args.faults:
                log(f"fault: {name}")
                if name == "beat":
                    beat_start = time.time()
                try:
                    faults[name]()
                except Exception as error:
                    traceback.print_exc()
                    failed = FaultResult(name, time.time(), time.time(), time.time())
                    failed.check("the fault ran to its end", False, f"{type(error).__name__}: {error}")
                    self.results.append(failed)
                    if self.stack.redis_stopped:
                        self.stack.redis_cont()
            self.final_checks(beat_start)
        except Exception:
            traceback.print_exc()
            self.notes.append("harness error:\n" + traceback.format_exc())
            if self.load is not None:
                self.load.stop()
            return self.report(harness_error=True)
        finally:
            self.stack.stop()
            self.receiver.stop()
        return self.report()

    # --- report --------------------------------------------------------------------------------

    def report(self, harness_error: bool = False) -> int:
        head = (
            f"# make chaos (bench/chaos.py {' '.join(sys.argv[1:])}), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
            f"commit {git_head()}, {platform.system()} {platform.release()} {platform.machine()}, "
            f"{os.cpu_count()} CPUs\n# load: 2 readers, 1 task creator, 1 record ingester, /health every 0.25 s; "
            f"took {time.time() - self.started:.0f}s"
        )
        columns = ("fault", "requests", "5xx", "other errors", "recovery", "writes acked", "writes lost", "result")
        rows = [
            (
                r.name,
                str(len(r.requests)),
                str(len(r.server_errors)),
                str(len(r.other_errors)),
                f"{r.recovery_s:.1f}s",
                str(r.acked_writes),
                str(r.lost_writes),
                "PASS" if r.passed else "FAIL",
            )
            for r in self.results
        ]
        widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(columns)]
        lines = [head, "", "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
        lines.append("")
        for r in self.results:
            lines.append(f"{r.name}: {'PASS' if r.passed else 'FAIL'}")
            for c in r.checks:
                lines.append(f"  [{'ok' if c.ok else 'FAIL'}] {c.what}: {c.evidence}")
        lines += self.notes
        text = "\n".join(lines) + "\n"
        print("\n" + text)
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"chaos-{datetime.now(UTC):%Y%m%dT%H%M%S}.txt"
        path.write_text(text)
        print(f"results: {path.relative_to(ROOT)}")
        if harness_error:
            return 2
        return 0 if self.results and all(r.passed for r in self.results) else 1


def git_head() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 (git from PATH, like make)
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    if platform.system() != "Linux":
        print("make chaos needs Linux (pg_ctl, signals, /proc)")
        return 2
    parser = argparse.ArgumentParser(prog="bench/chaos.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("CHAOS_PORT", "8765")))
    parser.add_argument("--recon-left", type=int, default=100_000, help="left records of the killed execution's job")
    parser.add_argument("--redis-pause-s", type=float, default=20)
    parser.add_argument("--pg-restarts", type=int, default=3)
    parser.add_argument("--beat-slots", type=int, default=2, help="full minute-slots the second beat runs")
    parser.add_argument(
        "--faults", nargs="+", default=["postgres", "hup", "worker", "redis", "beat"],
        choices=["postgres", "hup", "worker", "redis", "beat"],
    )  # fmt: skip
    args = parser.parse_args(argv)
    return Chaos(args).run()


if __name__ == "__main__":
    sys.exit(main())
