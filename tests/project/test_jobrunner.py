"""The job runner: every run is locked, recorded as a JobRun and, on transient errors, retried."""

import threading

import pytest
from celery.exceptions import Retry
from django.db import OperationalError, connection

from project.db.locks import lease
from project.jobrunner import RETRY_BACKOFF_MAX_S, JobSkipped, retry_countdown_s, scheduled_job
from project.models import JobRun

EVENT_TIMEOUT_S = 10


@scheduled_job("tests.add")
def add_job(a: int, b: int) -> dict:
    return {"sum": a + b}


@scheduled_job("tests.explode")
def explode_job() -> dict:
    raise ValueError("the vendor file is malformed")


@scheduled_job("tests.database_away")
def database_away_job() -> dict:
    raise OperationalError("server closed the connection unexpectedly")


_flaky_calls: list[int] = []


@scheduled_job("tests.flaky")
def flaky_job(failures: int) -> dict:
    _flaky_calls.append(1)
    if len(_flaky_calls) <= failures:
        raise OperationalError("could not connect to server")
    return {"attempts": len(_flaky_calls)}


@scheduled_job("tests.connection_dies")
def connection_dies_job() -> dict:
    with connection.cursor() as cursor:
        # What a PostgreSQL restart or failover does to the job's session.
        cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    return {}


# The blocking job reads these; the concurrency test sets them up.
_block = {"started": threading.Event(), "release": threading.Event()}


@scheduled_job("tests.blocking")
def blocking_job() -> dict:
    _block["started"].set()
    if not _block["release"].wait(EVENT_TIMEOUT_S):
        raise AssertionError("the test never released the blocking job")
    return {"released": True}


def runs(name: str) -> list[JobRun]:
    return list(JobRun.objects.filter(name=name).order_by("id"))


@pytest.mark.django_db
def test_successful_run_is_recorded_with_result_and_duration():
    result = add_job.run_now({"a": 2, "b": 3})

    assert result == {"sum": 5}
    [run] = runs("tests.add")
    assert run.status == JobRun.Status.SUCCEEDED
    assert run.result == {"sum": 5}
    assert run.duration_ms is not None and run.duration_ms >= 0
    assert run.finished_at is not None and run.finished_at >= run.started_at
    assert run.error == ""


@pytest.mark.django_db
def test_celery_task_run_records_its_celery_id():
    outcome = add_job.apply(kwargs={"a": 1, "b": 1})

    assert outcome.get() == {"sum": 2}
    [run] = runs("tests.add")
    assert run.status == JobRun.Status.SUCCEEDED
    assert run.celery_id == outcome.id


@pytest.mark.django_db
def test_failing_run_is_recorded_as_failed_with_the_error_and_reraises():
    with pytest.raises(ValueError, match="malformed"):
        explode_job.run_now({})

    [run] = runs("tests.explode")
    assert run.status == JobRun.Status.FAILED
    assert "ValueError: the vendor file is malformed" in run.error
    assert run.result == {}
    assert run.duration_ms is not None


@pytest.mark.django_db
def test_lock_is_released_after_a_run_so_the_next_run_is_not_skipped():
    add_job.run_now({"a": 1, "b": 2})
    with pytest.raises(ValueError):
        explode_job.run_now({})
    add_job.run_now({"a": 3, "b": 4})
    explode_job_again = runs("tests.explode")

    assert [run.status for run in runs("tests.add")] == [JobRun.Status.SUCCEEDED, JobRun.Status.SUCCEEDED]
    assert [run.status for run in explode_job_again] == [JobRun.Status.FAILED]
    with lease("job:tests.explode") as acquired:
        assert acquired is True


@pytest.mark.django_db(transaction=True)
def test_second_concurrent_run_is_skipped_not_queued_behind_the_first():
    _block["started"].clear()
    _block["release"].clear()
    first_outcome: dict = {}

    def first_run():
        try:
            first_outcome["result"] = blocking_job.run_now({})
        except BaseException as exc:  # reported to the main thread
            first_outcome["error"] = exc
        finally:
            connection.close()

    worker = threading.Thread(target=first_run, name="first-run")
    worker.start()
    try:
        assert _block["started"].wait(EVENT_TIMEOUT_S), "first run never started"
        second_result = blocking_job.run_now({})
    finally:
        _block["release"].set()
        worker.join(EVENT_TIMEOUT_S)

    assert not worker.is_alive()
    assert second_result == {"skipped": True}
    assert first_outcome == {"result": {"released": True}}
    statuses = sorted(run.status for run in runs("tests.blocking"))
    assert statuses == [JobRun.Status.SKIPPED, JobRun.Status.SUCCEEDED]
    skipped = JobRun.objects.get(name="tests.blocking", status=JobRun.Status.SKIPPED)
    assert skipped.duration_ms == 0
    assert "lock" in skipped.result["skipped"]


@pytest.mark.django_db
def test_transient_error_records_retrying_and_retries_after_the_backoff_countdown():
    with pytest.raises(Retry) as raised:
        database_away_job.apply(kwargs={}, throw=True)

    assert raised.value.when == retry_countdown_s(0) == 5
    assert isinstance(raised.value.exc, OperationalError)
    [run] = runs("tests.database_away")
    assert run.status == JobRun.Status.RETRYING
    assert "OperationalError" in run.error


@pytest.mark.django_db(transaction=True)
def test_job_whose_database_connection_drops_is_recorded_as_retrying_and_retried():
    try:
        with pytest.raises(Retry):
            connection_dies_job.apply(kwargs={}, throw=True)
    finally:
        connection.close()  # the test's own session was the one terminated

    assert [run.status for run in runs("tests.connection_dies")] == [JobRun.Status.RETRYING]


@pytest.mark.django_db
def test_transient_error_that_persists_is_failed_after_max_retries():
    # Eager apply() runs each retry at once (countdown ignored), so the whole chain is visible.
    outcome = database_away_job.apply(kwargs={})

    assert outcome.failed()
    assert isinstance(outcome.result, OperationalError)
    statuses = [run.status for run in runs("tests.database_away")]
    assert statuses == [JobRun.Status.RETRYING] * database_away_job.max_retries + [JobRun.Status.FAILED]


@pytest.mark.django_db
def test_transient_error_that_clears_succeeds_on_a_retry():
    _flaky_calls.clear()

    outcome = flaky_job.apply(kwargs={"failures": 2})

    assert outcome.get() == {"attempts": 3}
    statuses = [run.status for run in runs("tests.flaky")]
    assert statuses == [JobRun.Status.RETRYING, JobRun.Status.RETRYING, JobRun.Status.SUCCEEDED]


@pytest.mark.django_db
def test_transient_error_outside_celery_is_failed_not_retried():
    with pytest.raises(OperationalError):
        database_away_job.run_now({})

    assert [run.status for run in runs("tests.database_away")] == [JobRun.Status.FAILED]


@pytest.mark.parametrize(
    ("retries", "countdown_s"),
    [(0, 5), (1, 10), (2, 20), (3, 40), (5, 160), (6, RETRY_BACKOFF_MAX_S), (20, RETRY_BACKOFF_MAX_S)],
)
def test_retry_countdown_doubles_from_5s_and_is_capped_at_300s(retries, countdown_s):
    assert retry_countdown_s(retries) == countdown_s
    assert RETRY_BACKOFF_MAX_S == 300


@scheduled_job("tests.declines_to_run")
def declining_job():
    raise JobSkipped("cpu 95% > 80%")


@pytest.mark.django_db
def test_a_job_that_declines_to_run_is_recorded_as_skipped_with_its_reason():
    assert declining_job.run_now({}) == {"skipped": "cpu 95% > 80%"}
    run = JobRun.objects.get(name="tests.declines_to_run")
    assert (run.status, run.result, run.error) == ("skipped", {"skipped": "cpu 95% > 80%"}, "")


@scheduled_job("tests.shared_work", concurrency=2)
def shared_work(started: threading.Event, release: threading.Event):
    started.set()
    release.wait(timeout=10)
    return {}


@pytest.mark.django_db(transaction=True)
def test_a_job_with_n_slots_runs_n_at_once_and_skips_the_next():
    release = threading.Event()
    first, second = threading.Event(), threading.Event()

    def run(started):
        try:
            shared_work.run_now({"started": started, "release": release})
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(event,)) for event in (first, second)]
    for thread in threads:
        thread.start()
    assert first.wait(10) and second.wait(10)  # both slots taken
    try:
        assert shared_work.run_now({"started": threading.Event(), "release": release}) == {"skipped": True}
    finally:
        release.set()
        for thread in threads:
            thread.join(10)
    statuses = sorted(JobRun.objects.filter(name="tests.shared_work").values_list("status", flat=True))
    assert statuses == ["skipped", "succeeded", "succeeded"]
