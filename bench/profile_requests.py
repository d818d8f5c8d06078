"""Where one API request spends its CPU: cProfile over the whole Django stack (middleware included).

    python -m project.devservices exec -- python bench/profile_requests.py --requests 300

Runs as production does (DEBUG off, token auth, the real middleware), through Django's test
client against the seeded database: the task list's first page (50 rows), a task's detail, a
cache hit (tasks/stats), the admin's task and pending-versions changelists (logged in) and a search
for a common word
(--only picks some). Prints
per-request wall time (without, then with the profiler), the top functions by own time and by cumulative
time, and the cumulative share of each middleware and of DRF's phases; writes the same text to
bench/results/profile-<time>.txt.
"""

import argparse
import cProfile
import io
import logging
import os
import pstats
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# Production mode, minus what needs TLS in front.
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECRET_KEY", "profile-" + "x" * 50)
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("THROTTLE_USER_RATE", "1000000/min")

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.test import Client  # noqa: E402
from knox.models import AuthToken  # noqa: E402

from tasks.models import Task  # noqa: E402

# The access log stays on (it is part of a request's cost) but is written to /dev/null.
for _handler in logging.getLogger("opsdeck").handlers + logging.getLogger().handlers:
    if isinstance(_handler, logging.StreamHandler):
        _handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 (for the whole run)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Cumulative time of these is what each layer costs (its own work plus what it calls).
WATCH = [
    ("django_prometheus/middleware.py", "process_request"),
    ("django_prometheus/middleware.py", "process_response"),
    ("project/middleware.py", "__call__"),
    ("project/db/attribution.py", "process_view"),
    ("rest_framework/views.py", "perform_authentication"),
    ("rest_framework/views.py", "check_permissions"),
    ("rest_framework/views.py", "check_throttles"),
    ("rest_framework/views.py", "finalize_response"),
    ("rest_framework/serializers.py", "to_representation"),
    ("rest_framework/response.py", "rendered_content"),
    ("django/db/models/query.py", "_fetch_all"),
    ("django/db/backends/utils.py", "execute"),
    ("knox/auth.py", "authenticate_credentials"),
    ("project/api/throttling.py", "allow_request"),
    ("logging/__init__.py", "info"),
    ("gzip.py", "compress"),
    ("brotli", "compress"),
    ("hashlib", "blake2b"),
    ("project/logging.py", "format"),
    ("project/logging.py", "filter"),
    ("logging/__init__.py", "handle"),
    ("django/contrib/sessions/middleware.py", "process_response"),
    ("django/middleware/csrf.py", "process_view"),
    ("django/contrib/auth/middleware.py", "process_request"),
    ("whitenoise/middleware.py", "__call__"),
]


def profile(client: Client, path: str, params: dict, headers: dict, requests: int) -> tuple[float, float, pstats.Stats]:
    for _ in range(20):  # warm caches, connection pool, prepared statements
        assert client.get(path, params, headers=headers).status_code == 200
    started = time.perf_counter()  # first without the profiler, whose overhead grows with calls
    for _ in range(requests):
        client.get(path, params, headers=headers)
    plain_ms = (time.perf_counter() - started) * 1000 / requests
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for _ in range(requests):
        client.get(path, params, headers=headers)
    profiler.disable()
    per_request_ms = (time.perf_counter() - started) * 1000 / requests
    return plain_ms, per_request_ms, pstats.Stats(profiler)


def summary(label: str, plain_ms: float, per_request_ms: float, stats: pstats.Stats, requests: int) -> str:
    out = io.StringIO()
    out.write(
        f"\n=== {label}: {plain_ms:.2f} ms per request, {per_request_ms:.2f} ms under cProfile ({requests} requests)\n"
    )
    out.write("cumulative ms per request of watched layers:\n")
    for (filename, line, name), (_, nc, _, ct, _) in sorted(stats.stats.items(), key=lambda kv: -kv[1][3]):
        for wanted_file, wanted_name in WATCH:
            if (wanted_file in filename or wanted_file == name) and wanted_name in name:
                where = f"{Path(filename).parent.name}/{Path(filename).name}:{line}({name})"
                out.write(f"  {ct * 1000 / requests:8.3f} ms  {nc / requests:6.1f} calls  {where}\n")
    buffer = io.StringIO()
    stats.stream = buffer
    stats.sort_stats("tottime").print_stats(18)
    out.write("top by own time:\n")
    out.write("\n".join(line for line in buffer.getvalue().splitlines() if line.strip() and "/" in line))
    buffer = io.StringIO()
    stats.stream = buffer
    stats.sort_stats("cumulative").print_stats(45)
    out.write("\ntop by cumulative time:\n")
    out.write("\n".join(line for line in buffer.getvalue().splitlines() if line.strip() and "/" in line))
    out.write("\n")
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--only", default="", help="comma-separated words: cases whose label has one")
    args = parser.parse_args()

    user, _ = get_user_model().objects.get_or_create(username="bench")
    if not (user.is_superuser and user.is_staff):
        user.is_superuser = user.is_staff = True
        user.save(update_fields=["is_superuser", "is_staff"])
    _, token = AuthToken.objects.create(user=user)
    headers = {"Authorization": f"Token {token}", "Accept-Encoding": "gzip, br"}
    assignee = get_user_model().objects.filter(username__startswith="demo").order_by("pk").first()
    task_id = Task.objects.order_by("-created_at", "-id").values_list("pk", flat=True)[25]
    client, admin_client = Client(), Client()
    admin_client.force_login(user)
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    text = [
        f"profile at {datetime.now(UTC):%Y-%m-%d %H:%M}Z, load average {load} on {os.cpu_count()} CPUs "
        "(not a quiet machine if the first figure is near or above the CPU count)"
    ]
    cases = [
        ("task list, first page of 50", client, "/api/v1/tasks/", {}),
        ("task detail", client, f"/api/v1/tasks/{task_id}/", {}),
        ("tasks/stats cache hit", client, "/api/v1/tasks/stats/", {"assignee": assignee.pk if assignee else user.pk}),
        ("admin task changelist (session)", admin_client, "/admin/tasks/task/", {}),
        ("task search, common word", client, "/api/v1/tasks/", {"search": "invoice"}),
        ("approvals versions list, pending", client, "/api/v1/approvals/versions/", {"status": "pending"}),
        (
            "admin versions changelist, pending (session)",
            admin_client,
            "/admin/approvals/version/",
            {"status__exact": "pending"},
        ),
    ]
    for label, case_client, path, params in cases:
        if args.only and not any(word in label for word in args.only.split(",")):
            continue
        plain_ms, per_request_ms, stats = profile(case_client, path, params, headers, args.requests)
        text.append(summary(label, plain_ms, per_request_ms, stats, args.requests))
    report = "\n".join(text)
    print(report)
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"profile-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.txt"
    out.write_text(report)
    print(f"-> {out.relative_to(RESULTS_DIR.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
