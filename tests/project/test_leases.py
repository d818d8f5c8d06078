"""Job leases: one holder per name, held across transactions and connections (what PgBouncer's
transaction pooling needs), taken over once expired, and taken back by a redelivered message."""

import threading

import pytest
from django.db import connection

from project.db.locks import CLAIM_SQL, delete_expired_leases, lease, leases_owned_by
from project.jobrunner import scheduled_job
from project.models import JobRun, Lease

pytestmark = pytest.mark.django_db(transaction=True)
EVENT_TIMEOUT_S = 10


def in_other_connection(func):
    """Run func in a thread of its own (its own connection, closed afterwards); return its result."""
    outcome: dict = {}

    def target():
        try:
            outcome["result"] = func()
        except BaseException as exc:  # reported to the test
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(EVENT_TIMEOUT_S)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def claim(name: str, holder: str, seconds: int = 300) -> bool:
    """Take the lease and never release it, as a worker that died holding it would."""
    with connection.cursor() as cursor:
        cursor.execute(CLAIM_SQL, [name, holder, seconds])
        return cursor.fetchone() is not None


def test_a_held_lease_is_refused_to_another_holder_and_free_again_after_release():
    holding, release = threading.Event(), threading.Event()

    def hold():
        with lease("job:tests.lease") as acquired:
            holding.set()
            release.wait(EVENT_TIMEOUT_S)
        return acquired

    holder = threading.Thread(target=lambda: (hold(), connection.close()))
    holder.start()
    try:
        assert holding.wait(EVENT_TIMEOUT_S)
        with lease("job:tests.lease") as acquired:
            assert acquired is False
    finally:
        release.set()
        holder.join(EVENT_TIMEOUT_S)
    with lease("job:tests.lease") as acquired:
        assert acquired is True
    assert not Lease.objects.filter(name="job:tests.lease").exists()


def test_a_lease_outlives_the_connection_that_took_it():
    # A session-level advisory lock would go with its connection; behind PgBouncer in transaction
    # mode a job's next transaction may run on another server connection, so the lease must not.
    assert in_other_connection(lambda: claim("job:tests.outlives", holder="message-1")) is True

    with lease("job:tests.outlives") as acquired:
        assert acquired is False
    assert Lease.objects.get(name="job:tests.outlives").holder == "message-1"


def test_an_expired_lease_is_taken_over_and_swept():
    assert in_other_connection(lambda: claim("job:tests.expired", holder="dead-worker")) is True
    Lease.objects.filter(name="job:tests.expired").update(expires_at="2000-01-01T00:00:00Z")
    assert in_other_connection(lambda: claim("execution:tests.never-again", holder="dead-worker")) is True
    Lease.objects.filter(name="execution:tests.never-again").update(expires_at="2000-01-01T00:00:00Z")

    with lease("job:tests.expired") as acquired:
        assert acquired is True
    assert delete_expired_leases() == 1
    assert not Lease.objects.exists()


def test_the_same_message_redelivered_takes_its_lease_back_at_once():
    assert in_other_connection(lambda: claim("job:tests.redelivered", holder="celery-message-7")) is True

    with leases_owned_by("celery-message-7", 300), lease("job:tests.redelivered") as acquired:
        assert acquired is True
    with leases_owned_by("celery-message-8", 300), lease("job:tests.redelivered") as acquired:
        assert acquired is True  # released by the redelivered run above


def test_a_lease_lasts_the_jobs_hard_time_limit_plus_a_margin():
    def claim_and_read():
        with leases_owned_by("celery-message-9", 1200), lease("job:tests.long") as acquired:
            row = Lease.objects.get(name="job:tests.long")
        return acquired, (row.expires_at - row.acquired_at).total_seconds()

    assert in_other_connection(claim_and_read) == (True, 1260.0)


_ran: list[str] = []


@scheduled_job("tests.leased", time_limit_s=300)
def leased_job() -> dict:
    _ran.append("ran")
    return {"ran": True}


class Request:
    def __init__(self, celery_id: str):
        self.id, self.retries, self.headers = celery_id, 0, {}


class Task:
    max_retries = 0

    def __init__(self, celery_id: str):
        self.request = Request(celery_id)


def test_a_job_whose_lease_a_dead_worker_left_runs_when_its_message_comes_back():
    _ran.clear()
    assert in_other_connection(lambda: claim("job:tests.leased", holder="lost-message")) is True

    other = leased_job.run_now({}, celery_task=Task("another-message"))
    same = leased_job.run_now({}, celery_task=Task("lost-message"))

    assert (other, same, _ran) == ({"skipped": True}, {"ran": True}, ["ran"])
    assert list(JobRun.objects.order_by("id").values_list("celery_id", "status")) == [
        ("another-message", JobRun.Status.SKIPPED),
        ("lost-message", JobRun.Status.SUCCEEDED),
    ]
    assert not Lease.objects.exists()


def test_a_lease_that_cannot_be_released_leaves_the_jobs_own_error_to_report(monkeypatch, caplog):
    from project.db import locks

    with pytest.raises(ValueError, match="the job's own error"), lease("job:tests.unreleased") as acquired:
        assert acquired is True
        monkeypatch.setattr(locks, "RELEASE_SQL", "SELECT pg_terminate_backend(pg_backend_pid())")
        raise ValueError("the job's own error")

    connection.close()
    assert "lease not released: it will expire" in caplog.text
    assert Lease.objects.get(name="job:tests.unreleased").holder.startswith("anon:")
