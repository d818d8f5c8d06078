"""`make load`: Opsdeck under closed-loop load beside a raw floor, per endpoint, with ratios.

    make load                                   # 1M tasks, 8/32/64 users, 30 s per point
    LOAD_SECONDS=10 LOAD_USERS=8,32 make load   # a short smoke run
    LOAD_SCENARIOS=task_list,mix_002 make load  # some scenarios only

What it does, in order:
1. seeds the database up to LOAD_TASKS tasks, LOAD_VERSIONS pending versions and the demo
   reconciliation of LOAD_RECON_RECORDS records (both sides, run once) — once, kept under var/
   and reused by later runs;
   it captures the SQL each approvals/reconciliation scenario runs, for the floor to replay;
   migrates, collects static files (the admin runs with DEBUG off) and prepares a superuser, an
   API token, an admin session and the ids/cursor/search terms the users need;
2. starts Opsdeck as `make run` starts its web process (gunicorn, WEB_CONCURRENCY workers,
   Prometheus multiprocess mode, JSON access log) with DEBUG off and throttles raised through
   their settings, on LOAD_PORT; and the raw floor (bench/load/floor.py: same SQL, psycopg pool,
   orjson, no Django) under the same gunicorn and worker count on LOAD_FLOOR_PORT;
3. for each scenario and user count runs locust headless (bench/load/locustfile.py) for
   LOAD_SECONDS against Opsdeck, then against the floor where the floor serves it;
4. restarts Opsdeck at its default throttles and runs tasks/stats for LOAD_THROTTLE_SECONDS:
   it must answer 429s and never a 5xx;
5. prints the table (rps, p50/p95/p99, errors by status, floor rps/p95, Opsdeck ÷ floor) with
   the web workers' RSS and the machine's load average, and writes it to bench/results/.
"""

import contextlib
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

LOAD_SECONDS = int(os.environ.get("LOAD_SECONDS", "30"))
REPLAYED = (
    "versions_pending",
    "version_detail",
    "pending_count",
    "rules",
    "recon_jobs",
    "recon_job_detail",
    "recon_summary",
    "recon_matches",
    "recon_exceptions",
)
LOAD_USERS = [int(n) for n in os.environ.get("LOAD_USERS", "8,32,64").split(",")]
ALL_SCENARIOS = [
    "task_list",
    "filtered",
    "cursor_deep",
    "search_common",
    "search_rare",
    "search_prefix",
    "detail",
    "stats",
    "create",
    "admin_changelist",
    "mix_002",
    # Approvals (seed 000) and reconciliation (seed 001): the floor replays the SQL each runs.
    *REPLAYED,
    "admin_versions",
    "mix_000",
    "admin_executions",
    "mix_001",
]
LOAD_SCENARIOS = os.environ.get("LOAD_SCENARIOS", ",".join(ALL_SCENARIOS)).split(",")
# The floor serves every API scenario's SQL; the admin pages and the mixes have no floor.
FLOOR_SCENARIOS = {name for name in ALL_SCENARIOS if not name.startswith(("admin_", "mix_"))}
LOAD_TASKS = int(os.environ.get("LOAD_TASKS", "1000000"))
LOAD_VERSIONS = int(os.environ.get("LOAD_VERSIONS", "1000000"))
# Both sides together: 200,000 is the 100k x 100k reconciliation, run once when seeded.
LOAD_RECON_RECORDS = int(os.environ.get("LOAD_RECON_RECORDS", "200000"))
LOAD_THROTTLE_SECONDS = int(os.environ.get("LOAD_THROTTLE_SECONDS", "20"))
WEB_CONCURRENCY = os.environ.get("WEB_CONCURRENCY", "2")
# 1: gunicorn's sync workers, as `make run`; more: gthread workers with this many threads each.
WEB_THREADS = os.environ.get("WEB_THREADS", "1")
LOAD_PORT = int(os.environ.get("LOAD_PORT", "18765"))
LOAD_FLOOR_PORT = int(os.environ.get("LOAD_FLOOR_PORT", "18766"))
VAR_DIR = Path(os.environ.get("OPSDECK_VAR_DIR", ROOT / "var"))
WORK_DIR = VAR_DIR / "load"
RESULTS_DIR = ROOT / "bench" / "results"
RAISED = "1000000000/min"

# Production settings for the servers (and for this process's Django), minus TLS in front.
SERVER_ENV = {
    "DJANGO_SETTINGS_MODULE": "project.settings",
    "DEBUG": "false",
    "SECRET_KEY": "load-test-only-" + "k" * 50,
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "SECURE_SSL_REDIRECT": "false",
    "SESSION_COOKIE_SECURE": "false",
    "CSRF_COOKIE_SECURE": "false",
    "OPSDECK_ROLE": "web",
}
RAISED_THROTTLES = {
    "THROTTLE_USER_RATE": RAISED,
    "THROTTLE_ANON_RATE": RAISED,
    "THROTTLE_BULK_RATE": RAISED,
    "THROTTLE_PENDING_COUNT_RATE": RAISED,
}
os.environ.update(SERVER_ENV)

import django  # noqa: E402

django.setup()

import orjson  # noqa: E402
import psutil  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.cache import cache  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from knox.models import AuthToken  # noqa: E402

from project.api.pagination import DEFAULT_ORDERING, KeysetPaginator  # noqa: E402
from tasks import selectors  # noqa: E402
from tasks.models import Project, Task  # noqa: E402


def log(message: str) -> None:
    print(f"[load] {message}", flush=True)


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


# --- 1. data and credentials ---------------------------------------------------------------------


def seed() -> None:
    """Tasks, versions and the demo reconciliation up to their targets; seeded once, reused."""
    from approvals.models import Version
    from reconciliation.models import Record
    from reconciliation.seed import DEMO_TENANT_SLUG

    for option, target, have in (
        ("tasks", LOAD_TASKS, Task.objects.count()),
        ("versions", LOAD_VERSIONS, Version.objects.count()),
        # The demo tenant's only: a benchmark's job left in the same database is not the demo.
        ("reconciliation", LOAD_RECON_RECORDS, Record.objects.filter(tenant__slug=DEMO_TENANT_SLUG).count()),
    ):
        # The demo reconciliation only ever grows by whole pairs: 'near' the target is there.
        if have < target * 0.99:
            log(f"seeding {option} up to {target:,} (have {have:,}); kept under {VAR_DIR} for later runs")
            call_command("seed_demo", f"--{option}", str(target), verbosity=0)
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")


def prepare() -> dict:
    call_command("migrate", interactive=False, verbosity=0)
    seed()
    if not (Path(settings.STATIC_ROOT) / "staticfiles.json").exists():
        log("collecting static files (the admin runs with DEBUG off)")
        call_command("collectstatic", interactive=False, verbosity=0)

    user, _ = get_user_model().objects.get_or_create(
        username="loadtest", defaults={"is_superuser": True, "is_staff": True}
    )
    user.is_superuser = user.is_staff = True
    user.save(update_fields=["is_superuser", "is_staff"])
    _, token = AuthToken.objects.create(user=user, expiry=None)
    client = Client()
    client.force_login(user)

    boundary = Task.objects.order_by(*DEFAULT_ORDERING).only("id", "created_at")[10_000 - 1]
    bounds = Task.objects.order_by("id").values_list("id", flat=True)
    min_id, max_id = bounds.first(), bounds.last()
    sample = Task.objects.filter(pk__in=[min_id + (max_id - min_id) * k // 40 for k in range(1, 40)])
    rare_terms = [title.rsplit("#", 1)[-1] for title in sample.values_list("title", flat=True)]
    assignees = list(
        get_user_model().objects.filter(username__startswith="demo").order_by("pk").values_list("pk", flat=True)[:5]
    )
    return {
        "token": token,
        "session": client.cookies[settings.SESSION_COOKIE_NAME].value,
        "deep_cursor": KeysetPaginator(Task.objects.all(), DEFAULT_ORDERING).encode_position(boundary, "n"),
        "min_id": min_id,
        "max_id": max_id,
        "projects": list(Project.objects.values_list("pk", flat=True)[:25]),
        "assignees": assignees,
        "search": {"common": "invoice", "rare": rare_terms, "prefix": "invo*"},
        "tasks": Task.objects.count(),
        "replayed": replayed_requests(user, token),
    }


def first_path(*candidates: str) -> str:
    """The first of the paths this URLconf serves (reconciliation's moved under one prefix)."""
    from django.urls import Resolver404, resolve

    for path in candidates:
        try:
            resolve(path.split("?")[0])
        except Resolver404:
            continue
        return path
    raise RuntimeError(f"none of {candidates} is served")


def replayed_paths(user) -> dict[str, str]:
    from approvals.models import ApprovalRule, Version
    from reconciliation.models import Execution, ReconciliationJob, Tenant, TenantMembership
    from reconciliation.seed import DEMO_TENANT_SLUG

    tenant = Tenant.objects.get(slug=DEMO_TENANT_SLUG)
    TenantMembership.objects.get_or_create(tenant=tenant, user=user, defaults={"role": "admin"})
    job = ReconciliationJob.objects.filter(tenant=tenant).order_by("pk").first()
    execution = Execution.objects.filter(job=job).order_by("-pk").first()
    if not ApprovalRule.objects.exists():
        ApprovalRule.objects.create(name="load: trusted small edits", conditions={"max_length": 200}, action="approve")
    version = Version.objects.filter(status="pending").order_by("-pk").first()
    recon = "/api/v1/reconciliations/"
    return {
        "versions_pending": "/api/v1/approvals/versions/?status=pending",
        "version_detail": f"/api/v1/approvals/versions/{version.pk}/",
        "pending_count": "/api/v1/approvals/pending-count/",
        "rules": "/api/v1/approvals/rules/",
        "recon_jobs": first_path(f"{recon}jobs/", "/api/v1/reconciliation/jobs/"),
        "recon_job_detail": first_path(f"{recon}jobs/{job.pk}/", f"/api/v1/reconciliation/jobs/{job.pk}/"),
        "recon_summary": f"{recon}{execution.pk}/summary",
        "recon_matches": first_path(
            f"{recon}matches/?execution={execution.pk}", f"/api/v1/reconciliation/matches/?execution={execution.pk}"
        ),
        "recon_exceptions": first_path(
            f"{recon}exceptions/?execution={execution.pk}&open=true",
            f"/api/v1/reconciliation/unmatched/?execution={execution.pk}&open=true",
        ),
    }


def replayed_requests(user, token: str) -> dict[str, dict]:
    """Each approvals/reconciliation scenario's path, and the SQL Opsdeck runs for it beyond what
    every authenticated request runs (token lookup, throttle bookkeeping): the floor replays that
    SQL, so its ratio measures Django and DRF, not a different query. A request whose answer is a
    cache hit runs no such SQL: the floor answers it from Redis (the body Opsdeck served)."""
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_AUTHORIZATION=f"Token {token}", HTTP_HOST="127.0.0.1")

    def statements(path: str) -> tuple[list[str], bytes]:
        client.get(path)  # fills the caches a steady state has filled
        with CaptureQueriesContext(db) as captured:
            response = client.get(path)
        if response.status_code != 200:
            raise RuntimeError(f"{path} answered {response.status_code}: {response.content[:300]!r}")
        return [query["sql"] for query in captured.captured_queries], response.content

    overhead = set(statements("/api/v1/approvals/pending-count/")[0])
    replayed = {}
    for name, path in replayed_paths(user).items():
        sql, body = statements(path)
        replayed[name] = {"path": path, "sql": [q for q in sql if q not in overhead], "body": body.decode()}
    return replayed


def warm_stats_caches(config: dict) -> None:
    """tasks/stats is measured as a cache hit: fill Opsdeck's cache and the floor's key."""
    import redis

    floor_cache = redis.Redis.from_url(os.environ["REDIS_URL"])
    for name, replayed in config["replayed"].items():
        if not replayed["sql"]:
            floor_cache.set(f"floor:replay:{name}", replayed["body"].encode(), ex=3600)
    for assignee in config["assignees"]:
        stats = selectors.task_stats_cached(assignee_id=assignee, ttl_s=settings.TASK_STATS_CACHE_TTL_S)
        floor_cache.set(f"floor:stats:{assignee}", orjson.dumps(stats), ex=3600)


# --- 2. servers ----------------------------------------------------------------------------------


def free_port(preferred: int) -> int:
    """`preferred` if nothing listens there, else any free port: never measure someone else's server."""
    for port in (preferred, 0):
        with socket.socket() as probe:
            # As gunicorn binds: a port in TIME_WAIT after the previous server is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise RuntimeError("no free port")


class Server:
    def __init__(self, name: str, app: str, port: int, env: dict):
        self.name, self.port = name, free_port(port)
        if self.port != port:
            log(f"port {port} is taken: {name} listens on {self.port}")
        self.log_path = WORK_DIR / f"{name}.log"
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            app,
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            WEB_CONCURRENCY,
            "--threads",
            WEB_THREADS,
            "--timeout",
            "60",
            "--access-logfile",
            str(WORK_DIR / f"{name}-access.log"),
            "--no-control-socket",  # its default path is shared by every gunicorn on the machine
        ]
        self.process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=self.log_file, stderr=self.log_file, start_new_session=True
        )
        deadline = time.monotonic() + 60
        while not (self._answers() and len(self.worker_rss_mb()) == int(WEB_CONCURRENCY)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; see {self.log_path}")
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def worker_rss_mb(self) -> list[float]:
        try:
            children = psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return []
        return [round(child.memory_info().rss / 2**20, 1) for child in children]

    def worker_cpu_s(self) -> float:
        """CPU seconds (user + system) the workers have used so far: per point, divided by the
        requests served, the cost of a request, which other jobs on the machine barely change."""
        try:
            children = psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return float("nan")
        return sum(child.cpu_times().user + child.cpu_times().system for child in children)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log_file.close()


def warm_up(server: Server, config: dict) -> None:
    """A few requests per worker before measuring: the first request of a worker builds URL
    resolvers, serializers and the pool's connections, which is not what a point measures."""
    import urllib.request

    headers = {"Authorization": f"Token {config['token']}", "Cookie": f"sessionid={config['session']}"}
    for path in ("/api/v1/tasks/", f"/api/v1/tasks/stats/?assignee={config['assignees'][0]}", "/admin/tasks/task/"):
        for _ in range(3 * int(WEB_CONCURRENCY)):
            request = urllib.request.Request(server.url + path, headers=headers)  # noqa: S310 (http, ours)
            # A 404 from the floor or a 429: the worker is warm either way.
            with contextlib.suppress(OSError):
                urllib.request.urlopen(request, timeout=60).read()  # noqa: S310


def latency_buckets(server: Server) -> dict:
    """{(view, le): cumulative count} of django-prometheus' per-view latency histogram (/metrics)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        body = urllib.request.urlopen(server.url + "/metrics", timeout=30).read().decode()  # noqa: S310
    except OSError:
        return {}
    buckets = {}
    for family in text_string_to_metric_families(body):
        if family.name == "django_http_requests_latency_seconds_by_view_method":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    key = (sample.labels["view"], float(sample.labels["le"]))
                    buckets[key] = buckets.get(key, 0) + sample.value
    return buckets


def prometheus_p95_ms(before: dict, after: dict) -> tuple[str, float]:
    """p95 of the point's busiest view as Prometheus' histogram_quantile computes it from the
    bucket increases (linear within the bucket), so the figure can be compared with Grafana's."""
    increase = {key: after[key] - before.get(key, 0) for key in after}
    views = {view for view, _ in increase}
    if not views:
        return "-", float("nan")
    view = max(views, key=lambda name: increase.get((name, float("inf")), 0))
    bounds = sorted(le for name, le in increase if name == view)
    total = increase[(view, float("inf"))]
    if total <= 0:
        return view, float("nan")
    rank, lower, below = 0.95 * total, 0.0, 0.0
    for le in bounds:
        count = increase[(view, le)]
        if count >= rank:
            if le == float("inf"):
                return view, lower * 1000
            return view, (lower + (le - lower) * (rank - below) / max(count - below, 1e-9)) * 1000
        lower, below = le, count
    return view, float("nan")


def opsdeck_env(throttles_raised: bool) -> dict:
    metrics_dir = WORK_DIR / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    env = {**os.environ, **SERVER_ENV, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    for name in RAISED_THROTTLES:
        env.pop(name, None)
    if throttles_raised:
        env.update(RAISED_THROTTLES)
    return env


def floor_env() -> dict:
    database = settings.DATABASES["default"]
    url = f"host={database['HOST']} dbname={database['NAME']} user={database['USER']}"
    if database.get("PORT"):
        url += f" port={database['PORT']}"
    redis_url = os.environ["REDIS_URL"]
    env = {
        **os.environ,
        "FLOOR_DATABASE_URL": url,
        "DB_POOL_MAX_SIZE": str(settings.DB_POOL_MAX_SIZE),
        "FLOOR_REPLAY": str(WORK_DIR / "config.json"),
    }
    if redis_url.startswith("unix://"):
        env["FLOOR_REDIS_SOCKET"] = redis_url[len("unix://") :].split("?")[0]
    return env


# --- 3. locust -----------------------------------------------------------------------------------


def run_locust(host: str, scenario: str, users: int, seconds: int, config_path: Path) -> dict:
    with tempfile.TemporaryDirectory(dir=WORK_DIR) as out:
        prefix = Path(out) / "run"
        command = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(ROOT / "bench" / "load" / "locustfile.py"),
            "--headless",
            "--users",
            str(users),
            "--spawn-rate",
            str(users),
            "--run-time",
            f"{seconds}s",
            "--stop-timeout",
            "5",
            "--host",
            host,
            "--csv",
            str(prefix),
            "--only-summary",
            "--loglevel",
            "ERROR",
        ]
        env = {
            **os.environ,
            "LOAD_CONFIG": str(config_path),
            "LOAD_SCENARIO": scenario,
            "DJANGO_SETTINGS_MODULE": "project.settings",
        }
        subprocess.run(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        with open(f"{prefix}_stats.csv") as stats_file:
            rows = {row["Name"]: row for row in csv.DictReader(stats_file)}
        errors: dict[str, int] = {}
        with open(f"{prefix}_failures.csv") as failures_file:
            for row in csv.DictReader(failures_file):
                found = re.search(r"HTTP (\d{3})", row["Error"])
                status = found.group(1) if found else row["Error"][:40]
                errors[status] = errors.get(status, 0) + int(row["Occurrences"])
    total = rows["Aggregated"]

    def number(key: str) -> float:
        return float(total[key]) if total[key] not in ("", "N/A") else float("nan")

    return {
        "requests": int(total["Request Count"]),
        "rps": number("Requests/s"),
        "p50_ms": number("50%"),
        "p95_ms": number("95%"),
        "p99_ms": number("99%"),
        "errors": errors,
    }


# --- 4/5. the run and its table ------------------------------------------------------------------


def main() -> int:
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    started_at = datetime.now(UTC)
    log(f"load average at start: {load_average()} ({os.cpu_count()} CPUs)")
    config = prepare()
    config_path = WORK_DIR / "config.json"
    config_path.write_text(json.dumps(config))
    log(f"{config['tasks']:,} tasks; {LOAD_SECONDS}s per point; users {LOAD_USERS}; scenarios {LOAD_SCENARIOS}")

    results, rss = [], {}
    opsdeck = floor = None
    try:
        opsdeck = Server("opsdeck", "project.wsgi:application", LOAD_PORT, opsdeck_env(throttles_raised=True))
        floor = Server("floor", "bench.load.floor:app", LOAD_FLOOR_PORT, floor_env())
        warm_up(opsdeck, config)
        warm_up(floor, config)
        rss["opsdeck_start"] = opsdeck.worker_rss_mb()
        for scenario in LOAD_SCENARIOS:
            for users in LOAD_USERS:
                warm_stats_caches(config)
                load_before = load_average()
                buckets_before = latency_buckets(opsdeck)
                mine = measured(opsdeck, scenario, users, config_path)
                mine["prometheus_view"], mine["prometheus_p95_ms"] = prometheus_p95_ms(
                    buckets_before, latency_buckets(opsdeck)
                )
                base = None
                if scenario in FLOOR_SCENARIOS:
                    base = measured(floor, scenario, users, config_path)
                row = {
                    "scenario": scenario,
                    "users": users,
                    "opsdeck": mine,
                    "floor": base,
                    "load_average": load_before,
                    "opsdeck_worker_rss_mb": opsdeck.worker_rss_mb(),
                }
                results.append(row)
                log(format_row(row))
        rss["opsdeck_end"] = opsdeck.worker_rss_mb()
        rss["floor_end"] = floor.worker_rss_mb()
        opsdeck.stop()
        opsdeck = Server("opsdeck", "project.wsgi:application", LOAD_PORT, opsdeck_env(throttles_raised=False))
        # The raised run's counts are still in this minute's window: start the user at zero.
        cache.delete_pattern("throttle_*")
        warm_up(opsdeck, config)
        # The cache hit, the cheapest endpoint, from 16 users: well past 100 requests a minute even
        # on a slow machine, so the run must show 429s.
        warm_stats_caches(config)
        throttled = run_locust(opsdeck.url, "stats", 16, LOAD_THROTTLE_SECONDS, config_path)
    finally:
        for server in (opsdeck, floor):
            if server is not None:
                server.stop()

    fivexx = sum(count for status, count in throttled["errors"].items() if status.startswith("5"))
    throttle_ok = throttled["errors"].get("429", 0) > 0 and fivexx == 0
    report = render(started_at, config, results, rss, throttled, throttle_ok)
    print(report)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = f"{started_at:%Y%m%dT%H%M%SZ}"
    (RESULTS_DIR / f"load-{stamp}.txt").write_text(report)
    (RESULTS_DIR / f"load-{stamp}.json").write_text(
        json.dumps({"results": results, "rss_mb": rss, "throttled": throttled}, indent=2)
    )
    log(f"-> bench/results/load-{stamp}.txt")
    return 0 if throttle_ok else 1


def measured(server: Server, scenario: str, users: int, config_path: Path) -> dict:
    """One locust point against `server`, with the workers' CPU ms per request it served."""
    cpu_before = server.worker_cpu_s()
    point = run_locust(server.url, scenario, users, LOAD_SECONDS, config_path)
    # The /metrics scrape after Opsdeck's point is outside this window; locust's count is close
    # to what the workers served (requests in flight at the end are in neither or both).
    point["cpu_ms_per_request"] = (server.worker_cpu_s() - cpu_before) * 1000 / max(point["requests"], 1)
    return point


def format_row(row: dict) -> str:
    mine, base = row["opsdeck"], row["floor"]
    errors = ", ".join(f"{status}: {count}" for status, count in sorted(mine["errors"].items())) or "0"
    text = (
        f"{row['scenario']:<17}{row['users']:>4}{mine['rps']:>9.1f}{mine['p50_ms']:>7.0f}{mine['p95_ms']:>7.0f}"
        f"{mine['p99_ms']:>7.0f}{mine.get('prometheus_p95_ms', float('nan')):>7.0f}  {errors:<12}"
    )
    cpu = mine.get("cpu_ms_per_request", float("nan"))
    if base:
        rps_ratio = mine["rps"] / base["rps"] if base["rps"] else float("nan")
        p95_ratio = mine["p95_ms"] / base["p95_ms"] if base["p95_ms"] else float("nan")
        text += f"{base['rps']:>9.1f}{base['p95_ms']:>7.0f}{rps_ratio:>8.2f}{p95_ratio:>8.2f}"
        text += f"{cpu:>8.2f}{base.get('cpu_ms_per_request', float('nan')):>7.2f}"
    else:
        text += f"{'-':>9}{'-':>7}{'-':>8}{'-':>8}{cpu:>8.2f}{'-':>7}"
    return text + f"   {row['load_average'].split()[0]:>6}"


def render(started_at, config, results, rss, throttled, throttle_ok) -> str:
    lines = [
        f"make load at {started_at:%Y-%m-%d %H:%M}Z: {config['tasks']:,} tasks, {LOAD_SECONDS}s per point, "
        f"closed loop (locust FastHttpUser, no think time), gunicorn {WEB_CONCURRENCY} workers x {WEB_THREADS} "
        f"thread(s) for both, "
        f"throttles raised to {RAISED}",
        f"machine: {os.cpu_count()} CPUs, load average at the end {load_average()} "
        "(the load generator runs on the same machine; compare ratios, not absolute figures)",
        "",
        f"{'scenario':<17}{'users':>4}{'rps':>9}{'p50':>7}{'p95':>7}{'p99':>7}{'prom95':>7}  {'errors':<12}"
        f"{'floor rps':>9}{'p95':>7}{'rps ÷':>8}{'p95 ÷':>8}{'cpu/req':>8}{'floor':>7}   {'load1':>6}",
    ]
    lines += [format_row(row) for row in results]
    fivexx = {status: count for status, count in throttled["errors"].items() if status.startswith("5")}
    lines += [
        "",
        "ms for p50/p95/p99 (locust, client side); prom95 is the p95 Prometheus computes for the point's view from "
        "django-prometheus' histogram (server side, bucket-interpolated); 'rps ÷' and 'p95 ÷' are Opsdeck ÷ floor; "
        "cpu/req is the web workers' CPU ms (user + system) per request served in the point, Opsdeck's then the "
        "floor's: the cost of a request, which a busy machine changes far less than rps and p95; "
        "load1 is the 1-minute load average before the point.",
        f"web worker RSS (MB): start {rss.get('opsdeck_start')}, end {rss.get('opsdeck_end')}; "
        f"floor workers at the end {rss.get('floor_end')}",
        f"default throttles, tasks/stats, 16 users, {LOAD_THROTTLE_SECONDS}s: {throttled['requests']} requests, "
        f"errors by status {throttled['errors'] or '{}'}, 5xx {fivexx or 0} -> "
        f"{'OK: 429s and no 5xx' if throttle_ok else 'FAILED: expected 429s and no 5xx'}",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
