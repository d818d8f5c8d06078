"""A schedule runs once per slot however many beats send it; a run whose worker died is marked
abandoned (never `running` forever) and its message is redelivered a bounded number of times."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

import project.celery
import project.jobs
from project.beat import SCHEDULE_HEADER, SLOT_HEADER, SlottedDatabaseScheduler
from project.jobrunner import job_runs_mark_abandoned, scheduled_job
from project.models import JobRun

pytestmark = pytest.mark.django_db
_calls: list[int] = []


@scheduled_job("tests.slotted")
def slotted_job() -> dict:
    _calls.append(1)
    return {"ran": True}


def beat_headers(slot: datetime, schedule: str = "Tests: slotted") -> dict:
    return {SCHEDULE_HEADER: schedule, SLOT_HEADER: slot.isoformat()}


SLOT = datetime(2026, 12, 4, 17, 5, tzinfo=UTC)


def test_two_beats_sending_the_same_slot_run_it_once_and_record_the_duplicate():
    _calls.clear()
    first = slotted_job.apply(headers=beat_headers(SLOT)).get()
    second = slotted_job.apply(headers=beat_headers(SLOT)).get()

    assert first == {"ran": True}
    assert second == {"skipped": "duplicate"}
    assert len(_calls) == 1
    runs = JobRun.objects.filter(name="tests.slotted").order_by("id")
    assert [run.status for run in runs] == ["succeeded", "skipped"]
    assert runs[0].slot_start == SLOT and runs[0].schedule == "Tests: slotted"
    assert runs[1].slot_start is None and "duplicate" in runs[1].result["skipped"]


def test_the_next_slot_and_another_schedule_of_the_same_job_each_run():
    _calls.clear()
    slotted_job.apply(headers=beat_headers(SLOT))
    slotted_job.apply(headers=beat_headers(SLOT + timedelta(minutes=1)))
    slotted_job.apply(headers=beat_headers(SLOT, schedule="Tests: slotted, other kwargs"))
    assert len(_calls) == 3


def test_runs_not_sent_by_beat_are_never_deduplicated():
    _calls.clear()
    slotted_job.apply()
    slotted_job.apply()
    assert len(_calls) == 2


def test_a_redelivered_message_marks_its_dead_run_abandoned_and_runs_again():
    _calls.clear()
    # The first delivery's worker was SIGKILLed mid-run: its row says running, its slot is taken.
    JobRun.objects.create(
        name="tests.slotted", celery_id="msg-1", status="running", started_at=timezone.now(),
        schedule="Tests: slotted", slot_start=SLOT,
    )  # fmt: skip

    result = slotted_job.apply(task_id="msg-1", headers=beat_headers(SLOT)).get()

    assert result == {"ran": True}
    statuses = dict(JobRun.objects.filter(celery_id="msg-1").values_list("status", "slot_start"))
    assert set(statuses) == {"abandoned", "succeeded"}
    assert not JobRun.objects.filter(status="running").exists()


def test_redelivery_is_bounded_a_message_that_keeps_killing_its_worker_stops(settings):
    _calls.clear()
    settings.JOB_MAX_REDELIVERIES = 2
    for _ in range(2):
        JobRun.objects.create(name="tests.slotted", celery_id="poison", status="running", started_at=timezone.now())
        JobRun.objects.filter(celery_id="poison", status="running").update(status="abandoned")
    JobRun.objects.create(name="tests.slotted", celery_id="poison", status="running", started_at=timezone.now())

    result = slotted_job.apply(task_id="poison").get()

    assert "worker lost" in result["failed"]
    assert _calls == []
    assert JobRun.objects.filter(celery_id="poison", status="failed").count() == 1
    assert not JobRun.objects.filter(status="running").exists()


def test_the_sweeper_marks_runs_past_their_time_limit_abandoned_and_leaves_live_ones():
    limit_s = project.celery.app.tasks["tests.slotted"].time_limit
    dead = JobRun.objects.create(
        name="tests.slotted", status="running", started_at=timezone.now() - timedelta(seconds=limit_s + 120)
    )
    live = JobRun.objects.create(name="tests.slotted", status="running", started_at=timezone.now())

    assert job_runs_mark_abandoned() == {"abandoned": {"tests.slotted": 1}}

    dead.refresh_from_db()
    live.refresh_from_db()
    assert (dead.status, live.status) == ("abandoned", "running")
    assert dead.finished_at is not None and "worker lost" in dead.error


def test_beat_stamps_crontab_messages_with_their_schedule_and_minute(monkeypatch):
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import ModelEntry

    app = project.celery.app
    sent = []
    task = app.tasks["project.relay_outbox"]
    monkeypatch.setattr(task, "apply_async", lambda args, kwargs, producer=None, **options: sent.append(options))
    scheduler = SlottedDatabaseScheduler(app=app, lazy=True)
    entry = ModelEntry(PeriodicTask.objects.get(name="Relay the outbox"), app=app)

    before = timezone.now()
    scheduler.apply_async(entry, producer=None, advance=False)

    (options,) = sent
    headers = options["headers"]
    assert headers[SCHEDULE_HEADER] == "Relay the outbox"
    slot = datetime.fromisoformat(headers[SLOT_HEADER])
    assert slot.second == 0 and slot.microsecond == 0
    assert before - timedelta(minutes=1) < slot <= timezone.now()
