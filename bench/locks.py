"""Benchmark: the job lock that survives PgBouncer's transaction pooling (issue 16).

    make bench-locks                         # embedded PostgreSQL (+ PgBouncer if installed)
    python bench/locks.py --iterations 1000

Three ways to keep one job from running twice at once, each acquired and released
`--iterations` times by one client, directly and (when `pgbouncer` is installed) through a
PgBouncer in transaction mode started like `make test-pgbouncer`'s:

- session advisory lock: pg_try_advisory_lock + pg_advisory_unlock (what the job runner used);
- transaction advisory lock: pg_try_advisory_xact_lock inside the batch's transaction, released
  by its commit (one per batch, not per run);
- lease row: project.db.locks' upsert on project_lease + delete (what it uses now).

Then, per method and path, whether it still excludes: the holder keeps it while a second client
tries `--attempts` times in separate transactions; "second holder" means the second client got it
too. Prints a table and writes it to bench/results/locks-<timestamp>.txt with the load average.
"""

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import django

django.setup()

import psycopg  # noqa: E402
from django.core.management import call_command  # noqa: E402

from project.db.locks import CLAIM_SQL, RELEASE_SQL  # noqa: E402

# Its own key per method: session locks leaked behind PgBouncer must not block the next method.
LOCK_CLASS, SESSION_KEY, XACT_KEY = 0x0D5D, 4242, 4243


def session_lock(conn, holder: str) -> tuple[bool, callable]:
    acquired = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_CLASS, SESSION_KEY]).fetchone()[0]
    return acquired, lambda: conn.execute("SELECT pg_advisory_unlock(%s, %s)", [LOCK_CLASS, SESSION_KEY])


def xact_lock(conn, holder: str) -> tuple[bool, callable]:
    # Held until the batch's transaction ends: acquire, do the batch, commit.
    conn.execute("BEGIN")
    acquired = conn.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [LOCK_CLASS, XACT_KEY]).fetchone()[0]
    return acquired, lambda: conn.execute("COMMIT")


def lease_row(conn, holder: str) -> tuple[bool, callable]:
    acquired = conn.execute(CLAIM_SQL, ["bench:locks", holder, 330]).fetchone() is not None
    return acquired, lambda: conn.execute(RELEASE_SQL, ["bench:locks", holder])


METHODS = {"session advisory lock": session_lock, "transaction advisory lock": xact_lock, "lease row": lease_row}


def connect(url: str):
    return psycopg.connect(url, autocommit=True, prepare_threshold=None)


def time_method(url: str, method, iterations: int) -> tuple[list[float], int]:
    """Timings of acquire+release, and how often the lock was refused to its only client (a
    session lock released on another server connection than the one holding it leaks)."""
    with connect(url) as conn:
        timings, refused = [], 0
        for _ in range(iterations):
            started = time.perf_counter()
            acquired, release = method(conn, "bench-holder")
            release()
            timings.append((time.perf_counter() - started) * 1e6)
            refused += not acquired
    return timings, refused


def second_holder(url: str, method, attempts: int) -> str:
    """Does a second client get the lock while the first holds it (each try its own transaction)?"""
    with connect(url) as holder, connect(url) as other:
        _, release = method(holder, "holder")
        if method is xact_lock:
            release()  # the batch committed: the lock went with it
            note = " (after the holder's batch committed)"
        else:
            note = ""
        got = 0
        for attempt in range(attempts):
            ok, other_release = method(other, f"other-{attempt}")
            other_release() if method is xact_lock or ok else None
            got += ok
        if method is not xact_lock:
            release()
    return (f"yes, {got}/{attempts} tries" if got else "no") + note


def run(url: str, label: str, iterations: int, attempts: int) -> list[str]:
    rows = []
    for name, method in METHODS.items():
        timings, refused = time_method(url, method, iterations)
        p50, p95 = statistics.median(timings), statistics.quantiles(timings, n=20)[18]
        second = second_holder(url, method, attempts)
        rows.append(f"| {label} | {name} | {p50:.0f} | {p95:.0f} | {refused}/{iterations} | {second} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--attempts", type=int, default=8)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)  # project_lease
    direct = os.environ["DATABASE_URL"]
    lines = [
        f"bench/locks.py --iterations {args.iterations} --attempts {args.attempts}, "
        f"{datetime.now(UTC):%Y-%m-%dT%H:%M}Z, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
        "(shared machine unless stated)",
        "",
        "| path | method | acquire+release p50 µs | p95 µs | refused to its only client | second holder while held? |",
        "| --- | --- | --- | --- | --- | --- |",
        *run(direct, "direct", args.iterations, args.attempts),
    ]
    from project.pgbouncer_rig import pgbouncer

    try:
        with pgbouncer(direct) as base_url:
            lines += run(f"{base_url}/opsdeck", "PgBouncer (transaction)", args.iterations, args.attempts)
    except SystemExit as missing:
        lines.append(f"(no PgBouncer run: {missing})")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(__file__).resolve().parent / "results" / f"locks-{datetime.now(UTC):%Y%m%dT%H%M%S}.txt"
    out.write_text(text)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
