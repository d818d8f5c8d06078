"""Server time of every monitoring cockpit page and JSON endpoint, on whatever data the database holds.

    DATABASE_URL=... python bench/monitoring_pages.py [--runs 7]

Each URL is requested through Django's test client (the whole middleware stack, template
rendering included; no network) by a superuser, once to warm up and then `--runs` times; the
median and the maximum are printed with the sizes of the biggest tables, so a figure always comes
with the data it was measured on. Figures are cached by the minute sampler in production: this
drops those cached figures before every request, so each figure is the uncached cost.
"""

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.cache import cache  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from monitoring import urls as performance_urls  # noqa: E402

PAGES = ["", "indexes/", "pool/", "backlog/", "queries/", "queries/?window=24h", "tables/", "system/"]
API = [str(pattern.pattern) for pattern in performance_urls.urlpatterns]


def biggest_tables() -> list[tuple[str, int]]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT coalesce(pg_partition_root(c.oid), c.oid)::regclass::text, sum(GREATEST(c.reltuples, 0))::bigint
            FROM pg_class c WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace
            GROUP BY 1 ORDER BY 2 DESC LIMIT 6
            """
        )
        return cursor.fetchall()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--save", action="store_true", help="also write the table to bench/results/")
    args = parser.parse_args()
    lines: list[str] = []

    def emit(line: str) -> None:
        print(line)
        lines.append(line)

    user, _ = get_user_model().objects.get_or_create(
        username="bench-monitoring", defaults={"is_staff": True, "is_superuser": True}
    )
    # The API's user throttle (100/min) would stop a benchmark, not measure it.
    from monitoring.api import PerformanceView

    PerformanceView.throttle_classes = []
    client = Client()
    client.force_login(user)
    emit(f"{platform.platform()}, {os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.2f}")
    emit("biggest tables (estimated rows): " + ", ".join(f"{name} {rows:,}" for name, rows in biggest_tables()))
    urls = [f"/admin/monitoring/dashboard/{page}" for page in PAGES]
    urls += [f"/api/v1/database/performance/{endpoint}" for endpoint in API]
    emit(f"{'':58s} {'uncached':>26s} {'cached':>10s}")
    emit(f"{'url':58s} {'median ms':>9s} {'max ms':>7s} {'queries':>7s} {'median ms':>10s}")
    for url in urls:
        uncached, cached, queries = [], [], 0
        for run in range(args.runs + 1):
            # Uncached: what a page costs when the sampler has not run. Only the cockpit's and
            # the pending count's keys are dropped: the broker may share this Redis database.
            cache.delete_pattern("monitoring:*")
            cache.delete_pattern("approvals:pending-count:*")
            with CaptureQueriesContext(connection) as captured:
                elapsed_ms = timed_get(client, url)
            if run:  # the first request warms up imports, template loading and the connection
                uncached.append(elapsed_ms)
                queries = len(captured)
                # Cached: the steady state, with the minute sampler's figures in the cache.
                cached.append(timed_get(client, url))
        emit(
            f"{url:58s} {statistics.median(uncached):9.1f} {max(uncached):7.1f} {queries:7d} "
            f"{statistics.median(cached):10.1f}"
        )
    emit(f"load average at end {os.getloadavg()[0]:.2f}")
    if args.save:
        target = Path(__file__).resolve().parent / "results" / f"monitoring-pages-{time.strftime('%Y%m%dT%H%M%S')}.txt"
        target.parent.mkdir(exist_ok=True)
        target.write_text("\n".join(lines) + "\n")
        print(f"saved {target}")


def timed_get(client, url: str) -> float:
    started = time.perf_counter()
    response = client.get(url)
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, (url, response.status_code)
    return elapsed_ms


if __name__ == "__main__":
    main()
