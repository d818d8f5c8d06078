"""Beat schedules synced from one list, and the operational management commands."""

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django_celery_beat.models import CrontabSchedule, PeriodicTask
from knox.models import get_token_model
from rest_framework.test import APIClient

from project import schedules
from project.schedules import MANAGED_MARKER, Schedule, sync_schedules
from tests.conftest import grant
from tests.factories import UserFactory

BASE_DIR = Path(__file__).resolve().parents[2]
SUBPROCESS_TIMEOUT_S = 60


def managed_tasks() -> list[tuple]:
    return list(
        PeriodicTask.objects.filter(description__contains=MANAGED_MARKER)
        .order_by("name")
        .values_list("id", "name", "task", "queue", "crontab_id", "enabled")
    )


def run_command(*args, **options) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, **options)
    return out.getvalue()


@pytest.mark.django_db
def test_sync_schedules_creates_each_schedule_once():
    PeriodicTask.objects.all().delete()  # post_migrate already synced the test database

    first = sync_schedules()
    rows = managed_tasks()
    second = sync_schedules()

    assert first["created"] == [schedule.name for schedule in schedules.SCHEDULES]
    assert second == {"created": [], "updated": first["created"], "disabled": []}
    assert managed_tasks() == rows
    assert len(rows) == len(schedules.SCHEDULES)
    partitions = PeriodicTask.objects.get(name="Maintain monthly partitions")
    assert (partitions.task, partitions.queue, partitions.enabled) == (
        "project.maintain_partitions",
        "maintenance",
        True,
    )
    crontab = partitions.crontab
    assert (crontab.minute, crontab.hour, crontab.day_of_week, str(crontab.timezone)) == ("15", "2", "*", "UTC")
    automation = PeriodicTask.objects.get(name="Approvals automation")
    assert (automation.task, automation.queue, automation.crontab.minute) == (
        "approvals.run_automation",
        "automation",
        "*",
    )
    # A run beat sent that still waits after 55 s is dropped: the next minute's run supersedes it.
    assert automation.expire_seconds == 55


@pytest.mark.django_db
def test_sync_schedules_command_reports_what_it_did():
    PeriodicTask.objects.all().delete()

    count = len(schedules.SCHEDULES)
    assert run_command("sync_schedules").strip() == f"schedules: {count} created, 0 updated, 0 disabled"
    assert run_command("sync_schedules").strip() == f"schedules: 0 created, {count} updated, 0 disabled"


@pytest.mark.django_db
def test_admin_edited_crontab_and_enabled_flag_survive_a_plain_sync_and_reset_restores_them():
    sync_schedules()
    task = PeriodicTask.objects.get(name="Maintain monthly partitions")
    task.crontab = CrontabSchedule.objects.create(minute="45", hour="4", timezone="UTC")
    task.enabled = False
    task.save()

    sync_schedules()
    kept = PeriodicTask.objects.get(pk=task.pk)

    assert (kept.crontab.minute, kept.crontab.hour, kept.enabled) == ("45", "4", False)

    run_command("sync_schedules", "--reset")
    restored = PeriodicTask.objects.get(pk=task.pk)

    assert (restored.crontab.minute, restored.crontab.hour, restored.enabled) == ("15", "2", True)


@pytest.mark.django_db
def test_sync_puts_back_the_job_and_queue_of_a_managed_schedule():
    sync_schedules()
    PeriodicTask.objects.filter(name="Maintain monthly partitions").update(task="typo.job", queue="default")

    sync_schedules()

    task = PeriodicTask.objects.get(name="Maintain monthly partitions")
    assert (task.task, task.queue) == ("project.maintain_partitions", "maintenance")


@pytest.mark.django_db
def test_managed_schedule_no_longer_listed_is_disabled_not_deleted(monkeypatch):
    retired = Schedule(
        name="Retired nightly export",
        job="tests.retired_export",
        queue="default",
        crontab={"minute": "0", "hour": "3"},
        description="Exported invoices nightly.",
    )
    monkeypatch.setattr(schedules, "PLATFORM_SCHEDULES", [*schedules.PLATFORM_SCHEDULES, retired])
    sync_schedules()
    unmanaged = PeriodicTask.objects.create(
        name="Hand-made in the admin", task="tests.other", crontab=CrontabSchedule.objects.create(minute="5")
    )
    monkeypatch.setattr(schedules, "PLATFORM_SCHEDULES", [s for s in schedules.PLATFORM_SCHEDULES if s is not retired])

    result = sync_schedules()

    assert result["disabled"] == ["Retired nightly export"]
    assert PeriodicTask.objects.get(name="Retired nightly export").enabled is False
    assert PeriodicTask.objects.get(pk=unmanaged.pk).enabled is True
    assert PeriodicTask.objects.get(name="Maintain monthly partitions").enabled is True
    assert sync_schedules()["disabled"] == []


@pytest.fixture
def superuser_env(monkeypatch):
    for name in ("DJANGO_SUPERUSER_USERNAME", "DJANGO_SUPERUSER_PASSWORD", "DJANGO_SUPERUSER_EMAIL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.django_db
def test_ensure_admin_creates_the_superuser_named_in_the_environment(superuser_env):
    superuser_env.setenv("DJANGO_SUPERUSER_USERNAME", "opsroot")
    superuser_env.setenv("DJANGO_SUPERUSER_PASSWORD", "a long operator passphrase")

    output = run_command("ensure_admin")

    user = get_user_model().objects.get(username="opsroot")
    assert user.is_superuser and user.is_staff
    assert user.check_password("a long operator passphrase")
    assert "passphrase" not in output
    assert output.strip() == "created admin user 'opsroot'"


@pytest.mark.django_db
def test_ensure_admin_without_a_password_generates_one_and_shows_it_once(superuser_env):
    first = run_command("ensure_admin")
    second = run_command("ensure_admin")

    match = re.search(r"created admin user 'admin' with password: (\S+)", first)
    assert match, first
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser
    assert admin.check_password(match[1])
    assert "password" not in second
    assert second.strip() == "admin user 'admin' exists"
    assert get_user_model().objects.filter(is_superuser=True).count() == 1
    # The generated password was put in the environment only for createsuperuser.
    assert "DJANGO_SUPERUSER_PASSWORD" not in os.environ
    assert "DJANGO_SUPERUSER_USERNAME" not in os.environ


@pytest.mark.django_db
def test_create_api_token_prints_a_token_that_authenticates_the_api():
    user = grant(UserFactory(), "tasks.view_task")

    token = run_command("create_api_token", user.username).strip()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = api.get("/api/v1/tasks/")

    assert response.status_code == 200
    assert response.wsgi_request.user == user


@pytest.mark.django_db
def test_create_api_token_stores_only_a_digest_of_the_token():
    user = UserFactory()

    token = run_command("create_api_token", user.username).strip()

    [stored] = get_token_model().objects.filter(user=user)
    assert stored.digest != token
    assert token not in stored.digest
    assert stored.token_key != token  # knox keeps a short prefix to find the row, not the token
    assert token.startswith(stored.token_key)


@pytest.mark.django_db
def test_a_wrong_api_token_is_refused():
    user = grant(UserFactory(), "tasks.view_task")
    token = run_command("create_api_token", user.username).strip()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token[:-4]}xxxx")

    assert api.get("/api/v1/tasks/").status_code == 401


@pytest.mark.django_db
def test_create_api_token_for_an_unknown_user_fails():
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        run_command("create_api_token", "nobody")


def start_django(**env_overrides: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings"}
    for name, value in env_overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )


def test_production_mode_refuses_to_start_with_the_development_secret_key():
    process = start_django(DEBUG="false", SECRET_KEY=None)

    assert process.returncode != 0
    assert "ImproperlyConfigured" in process.stderr
    assert "SECRET_KEY" in process.stderr


def test_production_mode_starts_with_a_real_secret_key():
    process = start_django(DEBUG="false", SECRET_KEY="k3y-" + "x" * 60)

    assert process.returncode == 0, process.stderr


def test_make_run_collects_static_files_again_only_when_a_source_changed(settings, tmp_path, monkeypatch):
    from project.management.commands import prepare_dev

    settings.STATIC_ROOT = tmp_path / "static"
    settings.STATIC_ROOT.mkdir()
    collected = []
    monkeypatch.setattr(prepare_dev, "call_command", lambda name, **kwargs: collected.append(name))
    source = tmp_path / "app-static"
    source.mkdir()
    (source / "app.css").write_text("body {}")
    settings.STATICFILES_DIRS = [source]

    prepare_dev.collect_static_when_changed()
    prepare_dev.collect_static_when_changed()
    assert collected == ["collectstatic"]

    (source / "app.css").write_text("body { color: red }")
    prepare_dev.collect_static_when_changed()
    assert collected == ["collectstatic", "collectstatic"]


def test_each_app_lists_its_own_schedules_and_the_platform_collects_them():
    from approvals.schedules import SCHEDULES as APPROVALS
    from monitoring.schedules import SCHEDULES as MONITORING
    from tasks.schedules import SCHEDULES as TASKS

    collected = schedules.app_schedules()
    for app_schedules in (APPROVALS, MONITORING, TASKS):
        assert app_schedules and all(schedule in collected for schedule in app_schedules)
    # Each app's jobs carry its own name; the platform's list names only platform jobs.
    assert all(s.job.startswith("monitoring.") for s in MONITORING)
    assert all(s.job.startswith("project.") for s in schedules.PLATFORM_SCHEDULES)


def test_every_registered_materialized_view_gets_a_refresh_schedule_derived_from_its_period():
    from project.matviews import registered_materialized_views

    refreshes = {s.kwargs["name"]: s for s in schedules.all_schedules() if s.job == "project.refresh_materialized_view"}
    views = registered_materialized_views()
    assert views and set(refreshes) == {view.name for view in views}
    for view in views:
        schedule = refreshes[view.name]
        assert schedule.queue == "maintenance"
        assert schedule.expires_s < view.refresh_every_s  # a late run is superseded by the next


@pytest.mark.parametrize(
    ("every_s", "fields", "runs_per_day"),
    [(60, {"minute"}, 1440), (900, {"minute"}, 96), (3600, {"minute"}, 24), (7200, {"minute", "hour"}, 12),
     (86400, {"minute", "hour"}, 1)],
)  # fmt: skip
def test_a_refresh_crontab_runs_exactly_as_often_as_the_period_says(every_s, fields, runs_per_day):
    from celery.schedules import crontab_parser

    from project.matviews import MaterializedView, refresh_crontab

    crontab = refresh_crontab(MaterializedView(name="mv_example", refresh_every_s=every_s, description=""))

    assert set(crontab) == fields
    minutes = crontab_parser(60).parse(crontab["minute"])
    hours = crontab_parser(24).parse(crontab.get("hour", "*"))
    assert len(minutes) * len(hours) == runs_per_day


@pytest.mark.parametrize("every_s", [90, 7 * 60, 5 * 3600, 2 * 86400])
def test_a_period_that_does_not_divide_an_hour_or_a_day_is_refused(every_s):
    from project.matviews import MaterializedView, refresh_crontab

    with pytest.raises(ValueError, match="must divide an hour or a day"):
        refresh_crontab(MaterializedView(name="mv_example", refresh_every_s=every_s, description=""))


def test_two_schedules_with_one_name_are_refused(monkeypatch):
    twin = schedules.PLATFORM_SCHEDULES[0]
    monkeypatch.setattr(schedules, "PLATFORM_SCHEDULES", [*schedules.PLATFORM_SCHEDULES, twin])
    with pytest.raises(ValueError, match=re.escape(twin.name)):
        schedules.all_schedules()
