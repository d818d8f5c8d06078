"""Headless-Chromium smoke test of the performance cockpit (`make e2e`).

Starts Opsdeck (gunicorn) on a free port against its own database `<dev db>_e2e`, logs into the
admin as a superuser through the login form, opens every cockpit page, checks that each rendered
(title, tabs, no error page, charts drawn where the page has them) and saves a screenshot to
var/e2e/<page>.png. Chromium is driven through chromedriver's W3C WebDriver HTTP API with httpx
(already a dependency): no Selenium, no browser download.

    python -m project.devservices exec -- python tests/e2e/monitoring_smoke.py
"""

import base64
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

BASE_DIR = Path(__file__).resolve().parents[2]
OUT_DIR = BASE_DIR / "var" / "e2e"
PAGES = {
    "overview": "/admin/monitoring/dashboard/",
    "indexes": "/admin/monitoring/dashboard/indexes/",
    "pool": "/admin/monitoring/dashboard/pool/",
    "backlog": "/admin/monitoring/dashboard/backlog/",
    "queries": "/admin/monitoring/dashboard/queries/",
    "tables": "/admin/monitoring/dashboard/tables/",
    "system": "/admin/monitoring/dashboard/system/",
}
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C WebDriver element key


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, *, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"e2e: timed out waiting for {what}")


class Browser:
    """The few WebDriver commands a smoke test needs."""

    def __init__(self, driver_url: str):
        self.http = httpx.Client(base_url=driver_url, timeout=60)
        capabilities = {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1440,1800",
                ],
            },
        }
        session = self.http.post("/session", json={"capabilities": {"alwaysMatch": capabilities}}).json()
        self.session = f"/session/{session['value']['sessionId']}"

    def command(self, method: str, path: str, payload: dict | None = None):
        response = self.http.request(method, self.session + path, json=payload)
        value = response.json()["value"]
        if response.status_code >= 400:
            raise RuntimeError(f"webdriver {path}: {value}")
        return value

    def get(self, url: str) -> None:
        self.command("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        found = self.command("POST", "/element", {"using": "css selector", "value": css})
        if not isinstance(found, dict) or ELEMENT not in found:
            raise RuntimeError(f"no element {css!r} on {self.script('return location.href;')}: {found}")
        return found[ELEMENT]

    def count(self, css: str) -> int:
        return len(self.command("POST", "/elements", {"using": "css selector", "value": css}))

    def type(self, css: str, text: str) -> None:
        self.command("POST", f"/element/{self.find(css)}/value", {"text": text})

    def click(self, css: str) -> None:
        self.command("POST", f"/element/{self.find(css)}/click", {})

    def script(self, source: str):
        return self.command("POST", "/execute/sync", {"script": source, "args": []})

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.command("GET", "/screenshot")))

    def quit(self) -> None:
        self.http.delete(self.session)


def e2e_database_url() -> str:
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "_e2e"))


def main() -> int:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    database_url = e2e_database_url()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "PYTHONPATH": str(BASE_DIR),
    }
    python = sys.executable

    import psycopg

    parts = urlsplit(database_url)
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [parts.path[1:]]).fetchone():
            conn.execute(f'CREATE DATABASE "{parts.path[1:]}"')
    subprocess.run([python, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=BASE_DIR, env=env, check=True)
    password = secrets.token_urlsafe(16)
    setup = (
        "import django; django.setup()\n"
        "from django.contrib.auth import get_user_model\n"
        "u, _ = get_user_model().objects.get_or_create(username='e2e-admin', defaults={'is_staff': True, "
        "'is_superuser': True})\n"
        f"u.is_staff = u.is_superuser = True; u.set_password({password!r}); u.save()\n"
    )
    subprocess.run([python, "-c", setup], cwd=BASE_DIR, env=env, check=True)

    port, driver_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [python, "-m", "gunicorn", "project.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
        cwd=BASE_DIR,
        env={**env, "OPSDECK_ROLE": "web"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    driver = subprocess.Popen(
        [os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"), f"--port={driver_port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    failures = []
    try:
        wait_for(lambda: httpx.get(f"{base}/health").status_code == 200, timeout_s=30, what="gunicorn")
        # History for the charts, taken now that the web processes publish their pool stats.
        sample = "import django; django.setup(); from monitoring import history; "
        sample += "history.sample_metrics(); history.snapshot_counters()"
        subprocess.run([python, "-c", sample], cwd=BASE_DIR, env=env, check=True, stdout=subprocess.DEVNULL)
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{driver_port}/status").json()["value"]["ready"],
            timeout_s=30,
            what="chromedriver",
        )
        browser = Browser(f"http://127.0.0.1:{driver_port}")
        try:
            browser.get(f"{base}/admin/login/")
            browser.type("#id_username", "e2e-admin")
            browser.type("#id_password", password)
            browser.click("input[type=submit]")
            wait_for(lambda: browser.count("#user-tools") > 0, timeout_s=15, what="the login")
            browser.get(f"{base}/admin/")
            if browser.count(f'a[href="{PAGES["overview"]}"]') == 0:
                failures.append("admin index has no link to the cockpit")
            for name, path in PAGES.items():
                started = time.monotonic()
                browser.get(base + path)
                load_ms = (time.monotonic() - started) * 1000
                tabs = browser.count(".monitoring-tabs a")
                charts = browser.count("canvas[data-chart]")
                drawn = browser.script(
                    "return Array.from(document.querySelectorAll('canvas[data-chart]'))"
                    ".filter(c => window.Chart && Chart.getChart(c)).length;"
                )
                title = browser.script("return document.title;")
                browser.screenshot(OUT_DIR / f"{name}.png")
                ok = tabs == len(PAGES) and drawn == charts and "Server Error" not in title
                print(
                    f"e2e {name:9s} {'ok ' if ok else 'FAIL'} {load_ms:6.0f} ms  charts {drawn}/{charts}  "
                    f"{OUT_DIR / (name + '.png')}"
                )
                if not ok:
                    failures.append(f"{name}: tabs={tabs} charts drawn {drawn}/{charts} title={title!r}")
        finally:
            browser.quit()
    finally:
        for process in (driver, server):
            process.terminate()
            process.wait(timeout=20)
    if failures:
        print("e2e failed:\n  " + "\n  ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
