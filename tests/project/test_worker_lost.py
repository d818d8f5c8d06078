"""A real prefork worker whose child is SIGKILLed mid-job: the message is redelivered (acks_late
with task_reject_on_worker_lost), runs to the end, and the dead run is marked abandoned."""

import os
import signal
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.db import connection

import project.celery
from project.models import JobRun
from project.settings import BASE_DIR

pytestmark = pytest.mark.django_db(transaction=True)
DEADLINE_S = 60


def wait_for(predicate, what: str):
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.1)  # polling a real worker, bounded by the deadline
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def worker(tmp_path):
    queue = f"test-worker-lost-{os.getpid()}"
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@/{db['NAME']}?host={db['HOST']}",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "OPSDECK_ROLE": "worker",
        "DJANGO_SETTINGS_MODULE": "project.settings",
    }
    command = [sys.executable, "-m", "celery", "-A", "project", "worker", "-P", "prefork", "-c", "1", "-Q", queue,
               "-I", "tests.project.worker_jobs", "--without-gossip", "--without-mingle", "--loglevel", "WARNING",
               "-n", f"lost-{os.getpid()}@%h"]  # fmt: skip
    process = subprocess.Popen(command, env=env, cwd=BASE_DIR, start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        yield queue
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def test_a_job_whose_worker_child_is_killed_is_redelivered_finishes_and_its_dead_run_is_abandoned(worker, tmp_path):
    marker = tmp_path / "first-attempt-pid"
    message = project.celery.app.send_task("tests.crash_once", kwargs={"marker": str(marker)}, queue=worker)

    child_pid = int(wait_for(lambda: marker.exists() and marker.read_text(), "the first attempt to start"))
    wait_for(lambda: JobRun.objects.filter(celery_id=message.id, status="running").exists(), "its JobRun")
    os.kill(child_pid, signal.SIGKILL)

    finished = wait_for(
        lambda: JobRun.objects.filter(celery_id=message.id, status="succeeded").first(), "the redelivered run"
    )

    assert finished.result["pid"] != child_pid
    statuses = sorted(JobRun.objects.filter(celery_id=message.id).values_list("status", flat=True))
    assert statuses == ["abandoned", "succeeded"]
