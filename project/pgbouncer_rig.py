"""`make test-pgbouncer`: the suite's integration tests through a real PgBouncer in transaction mode.

    python -m project.pgbouncer_rig [pytest args]

Starts Debian's `pgbouncer` (the Makefile installs it on demand) on a Unix socket under
var/pgbouncer, in front of the embedded PostgreSQL, with `server_round_robin = 1` and a few
server connections kept open: consecutive transactions of one client then land on different
server connections, so any session state a test relies on (a session advisory lock, a session
temp table, a `SET`) breaks as it would in production, instead of passing because one client
happened to keep one server connection. Then runs pytest with DATABASE_URL pointing at PgBouncer
and DB_BEHIND_PGBOUNCER=true.

The test database is created and migrated through PgBouncer too, but dropped directly once
PgBouncer has stopped: PostgreSQL refuses to drop a database PgBouncer still holds connections to
(the same is true in production: `migrate` and DDL on databases go direct, docs/operations.md).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from project.devservices import VAR_DIR, log, services_environment

PGBOUNCER_PORT = 6432
TEST_DATABASE = "test_opsdeck"
# What runs through it: jobs and their leases, automation, a reconciliation run, the cockpit, and
# the checks that the rig really pools per transaction (tests/pgbouncer).
INTEGRATION_TESTS = [
    "tests/pgbouncer",
    "tests/project/test_leases.py",
    "tests/project/test_jobrunner.py",
    "tests/project/test_job_slots.py",
    "tests/project/test_job_metrics.py",
    "tests/project/test_matviews.py",
    "tests/project/test_outbox.py",
    "tests/approvals/test_automation.py",
    "tests/reconciliation/test_matching.py",
    "tests/monitoring/test_pages.py",
    "tests/monitoring/test_api.py",
]


def pgbouncer_ini(upstream_socket_dir: str, socket_dir: Path) -> str:
    return f"""
[databases]
* = host={upstream_socket_dir} port=5432 user=postgres

[pgbouncer]
pool_mode = transaction
listen_addr =
listen_port = {PGBOUNCER_PORT}
unix_socket_dir = {socket_dir}
auth_type = any
admin_users = postgres
ignore_startup_parameters = extra_float_digits,options
max_client_conn = 400
default_pool_size = 20
min_pool_size = 4
server_round_robin = 1
logfile = {socket_dir / "pgbouncer.log"}
pidfile = {socket_dir / "pgbouncer.pid"}
"""


@contextmanager
def pgbouncer(database_url: str):
    """Yield a URL through a PgBouncer (transaction mode) in front of database_url's socket."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(binary).exists():
        raise SystemExit("pgbouncer is not installed: `make test-pgbouncer` installs Debian's package")
    upstream_socket_dir = unquote(urlsplit(database_url).hostname or "")
    socket_dir = (VAR_DIR / "pgbouncer").resolve()
    socket_dir.mkdir(parents=True, exist_ok=True)
    ini = socket_dir / "pgbouncer.ini"
    ini.write_text(pgbouncer_ini(upstream_socket_dir, socket_dir))
    command = [binary, str(ini)]
    if os.geteuid() == 0:
        # PgBouncer refuses to run as root; the embedded cluster's own user can reach its socket.
        user = Path(upstream_socket_dir).owner()
        shutil.chown(socket_dir, user=user)
        for name in ("pgbouncer.log", "pgbouncer.pid"):
            (socket_dir / name).unlink(missing_ok=True)
        command[1:1] = ["-u", pwd.getpwnam(user).pw_name]
    process = subprocess.Popen(command, start_new_session=True)
    socket_path = socket_dir / f".s.PGSQL.{PGBOUNCER_PORT}"
    deadline = time.monotonic() + 10
    while not socket_path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"pgbouncer did not start; see {socket_dir / 'pgbouncer.log'}")
        time.sleep(0.05)
    log(f"PgBouncer {PGBOUNCER_PORT} (transaction mode) in front of {upstream_socket_dir}")
    try:
        yield f"postgres://postgres@{quote(str(socket_dir), safe='')}:{PGBOUNCER_PORT}"
    finally:
        process.terminate()
        process.wait(timeout=20)
        log("PgBouncer stopped")


def drop_test_database(database_url: str) -> None:
    import psycopg

    host = unquote(urlsplit(database_url).hostname or "")
    with psycopg.connect(host=host, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEST_DATABASE}" WITH (FORCE)')


def main(argv: list[str]) -> int:
    with services_environment() as env:
        direct_url = env["DATABASE_URL"]
        drop_test_database(direct_url)
        with pgbouncer(direct_url) as base_url:
            env = {
                **env,
                "DATABASE_URL": f"{base_url}/opsdeck",
                "DB_BEHIND_PGBOUNCER": "true",
                "PGBOUNCER_ADMIN_URL": f"{base_url}/pgbouncer",
            }
            # --reuse-db: pytest-django would drop the test database at the end, through PgBouncer.
            command = [sys.executable, "-m", "pytest", "--reuse-db"]
            code = subprocess.call(command + (argv or INTEGRATION_TESTS), env=env)
        drop_test_database(direct_url)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
