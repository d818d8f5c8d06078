"""What is exposed by default: `make run` runs with DEBUG off (Django's debug 404 page lists every
URL pattern), and a worker's unauthenticated metrics endpoint listens on loopback only."""

import json
import os
import subprocess
import sys

import pytest

from project import celery as celery_module
from project import devservices
from project.settings import BASE_DIR


def test_make_run_defaults_to_debug_off_with_a_persistent_key_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setattr(devservices, "VAR_DIR", tmp_path)

    first = devservices.local_production_like_settings({})
    second = devservices.local_production_like_settings({})

    assert first["DEBUG"] == "false"
    assert first["SECRET_KEY"] == second["SECRET_KEY"] and len(first["SECRET_KEY"]) >= 50
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    # Plain HTTP on localhost: no redirect to https, no secure-only cookies.
    assert first["SECURE_SSL_REDIRECT"] == first["SESSION_COOKIE_SECURE"] == "false"


def test_make_run_keeps_an_explicit_debug_choice(tmp_path, monkeypatch):
    monkeypatch.setattr(devservices, "VAR_DIR", tmp_path)
    assert devservices.local_production_like_settings({"DEBUG": "true"}) == {}


def test_settings_under_make_runs_defaults_start_with_debug_off_and_no_https_redirect(tmp_path, monkeypatch):
    monkeypatch.setattr(devservices, "VAR_DIR", tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "DEBUG"}
    env.update(devservices.local_production_like_settings(env), DJANGO_SETTINGS_MODULE="project.settings")
    script = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.DEBUG, s.SECURE_SSL_REDIRECT, s.STORAGES['staticfiles']['BACKEND']]))"
    )
    output = subprocess.run([sys.executable, "-c", script], env=env, cwd=BASE_DIR, capture_output=True, text=True)
    assert output.returncode == 0, output.stderr
    debug, ssl_redirect, static_backend = json.loads(output.stdout.strip().splitlines()[-1])
    assert (debug, ssl_redirect) == (False, False)
    assert "whitenoise" in static_backend  # static files still served, by whitenoise


@pytest.mark.parametrize(("configured", "expected"), [(None, "127.0.0.1"), ("0.0.0.0", "0.0.0.0")])  # noqa: S104
def test_worker_metrics_listen_on_loopback_unless_widened(configured, expected, monkeypatch):
    import prometheus_client

    bound = []
    monkeypatch.setattr(prometheus_client, "start_http_server", lambda port, addr, registry: bound.append(addr))
    monkeypatch.setenv("WORKER_METRICS_PORT", "9808")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    if configured is None:
        monkeypatch.delenv("WORKER_METRICS_ADDR", raising=False)
    else:
        monkeypatch.setenv("WORKER_METRICS_ADDR", configured)

    celery_module.serve_worker_metrics()

    assert bound == [expected]
