"""docker-compose.yml cannot be run here; at least every variable it gives Opsdeck must be one
Opsdeck reads, so a typo fails here rather than silently on a user's machine."""

from pathlib import Path

import yaml

BASE_DIR = Path(__file__).resolve().parents[2]
OPSDECK_SERVICES = ("migrate", "web", "worker", "beat")
# Read outside project/settings.py: by gunicorn's command line, Celery's worker signal and
# prometheus_client itself.
READ_ELSEWHERE = {"WEB_CONCURRENCY", "WEB_THREADS", "WORKER_METRICS_PORT", "PROMETHEUS_MULTIPROC_DIR"}


def opsdeck_environment() -> dict[str, set[str]]:
    compose = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())
    return {
        name: set(compose["services"][name].get("environment") or {})
        for name in OPSDECK_SERVICES
        if name in compose["services"]
    }


def test_every_variable_compose_gives_opsdeck_is_one_opsdeck_reads():
    code = "\n".join(path.read_text() for path in (BASE_DIR / "project").rglob("*.py"))
    for service, variables in opsdeck_environment().items():
        unknown = {name for name in variables - READ_ELSEWHERE if f'"{name}"' not in code}
        assert not unknown, f"{service} sets variables Opsdeck never reads: {sorted(unknown)}"


def test_every_opsdeck_process_names_its_role_and_runs_in_production_mode():
    for service, variables in opsdeck_environment().items():
        assert {"OPSDECK_ROLE", "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "DEBUG"} <= variables, service
