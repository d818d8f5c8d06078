"""CPU ms per request through the WSGI application, as gunicorn calls it (no HTTP, no test client).

    python -m project.devservices exec -- python bench/wsgi_cpu.py [--source DIR] [--requests N]

Calls `project.wsgi`'s application with a WSGI environ for the task list's first page, a task's
detail and a tasks/stats cache hit (token auth, production settings, Prometheus multiprocess
mode, the access log to /dev/null) and prints wall and CPU (process_time) ms per request. CPU time
is what a busy shared machine changes least; `--source` runs another checkout of Opsdeck (e.g.
main's, from `git archive main`) against the same database, to alternate before/after runs; run
it from that directory with PYTHONPATH set to it (the header line says where the code came from).
"""

import argparse
import io
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--source", default=str(Path(__file__).resolve().parent.parent), help="Opsdeck checkout")
parser.add_argument("--requests", type=int, default=500)
args = parser.parse_args()

sys.path.insert(0, args.source)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECRET_KEY", "wsgi-cpu-" + "x" * 50)
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1")
os.environ.setdefault("THROTTLE_USER_RATE", "1000000000/min")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="wsgi-cpu-")

import django  # noqa: E402

django.setup()
logging.disable(logging.WARNING)  # errors still show; the access log (INFO) is off

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from knox.models import AuthToken  # noqa: E402

from tasks.models import Task  # noqa: E402


def main() -> int:
    application = get_wsgi_application()
    user, _ = get_user_model().objects.get_or_create(username="bench", defaults={"is_superuser": True})
    _, token = AuthToken.objects.create(user=user)
    assignee = get_user_model().objects.filter(username__startswith="demo").order_by("pk").first() or user
    task_id = Task.objects.order_by("-created_at", "-id").values_list("pk", flat=True)[25]

    def environ(path: str, query: str) -> dict:
        return {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_AUTHORIZATION": f"Token {token}",
            "HTTP_ACCEPT_ENCODING": "gzip, br",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http",
            "wsgi.version": (1, 0),
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }

    statuses = []

    def start_response(status, headers, exc_info=None):
        statuses.append(status)

    def call(path: str, query: str) -> None:
        body = application(environ(path, query), start_response)
        b"".join(body)
        body.close()

    import project.api.pagination
    import tasks.api

    code = {str(Path(project.api.pagination.__file__).parents[2]), str(Path(tasks.api.__file__).parents[1])}
    print(f"code from {', '.join(sorted(code))}; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for label, path, query in (
        ("task list", "/api/v1/tasks/", ""),
        ("task detail", f"/api/v1/tasks/{task_id}/", ""),
        ("tasks/stats cache hit", "/api/v1/tasks/stats/", f"assignee={assignee.pk}"),
    ):
        for _ in range(30):  # warm caches and the connection pool
            call(path, query)
        statuses.clear()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(args.requests):
            call(path, query)
        wall_ms = (time.perf_counter() - wall) * 1000 / args.requests
        cpu_ms = (time.process_time() - cpu) * 1000 / args.requests
        assert set(statuses) == {"200 OK"}, set(statuses)
        print(f"  {label:<24}{wall_ms:7.2f} ms wall {cpu_ms:7.2f} ms CPU per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
