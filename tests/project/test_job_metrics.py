"""The job runner counts every run by outcome and times the runs that got their lock."""

import threading

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from project.db.locks import lease
from project.jobrunner import JobSkipped, scheduled_job

EVENT_TIMEOUT_S = 10


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@scheduled_job("tests.metrics_ok")
def ok_job() -> dict:
    return {}


@scheduled_job("tests.metrics_fails")
def failing_job() -> dict:
    raise ValueError("bad input file")


@scheduled_job("tests.metrics_declines")
def declining_job() -> dict:
    raise JobSkipped("nothing to do")


@pytest.mark.django_db
def test_each_outcome_is_counted_and_timed():
    before = {
        status: sample("opsdeck_job_runs_total", job=job, status=status)
        for job, status in [
            ("tests.metrics_ok", "succeeded"),
            ("tests.metrics_fails", "failed"),
            ("tests.metrics_declines", "skipped"),
        ]
    }
    timed_before = sample("opsdeck_job_run_duration_seconds_count", job="tests.metrics_ok")

    ok_job.run_now({})
    ok_job.run_now({})
    with pytest.raises(ValueError):
        failing_job.run_now({})
    declining_job.run_now({})

    assert sample("opsdeck_job_runs_total", job="tests.metrics_ok", status="succeeded") == before["succeeded"] + 2
    assert sample("opsdeck_job_runs_total", job="tests.metrics_fails", status="failed") == before["failed"] + 1
    assert sample("opsdeck_job_runs_total", job="tests.metrics_declines", status="skipped") == before["skipped"] + 1
    assert sample("opsdeck_job_run_duration_seconds_count", job="tests.metrics_ok") == timed_before + 2
    assert sample("opsdeck_job_run_duration_seconds_sum", job="tests.metrics_ok") > 0


@pytest.mark.django_db(transaction=True)
def test_a_run_skipped_at_the_lock_is_counted_but_not_timed():
    holding, release = threading.Event(), threading.Event()

    def hold():
        from django.db import connection

        try:
            with lease("job:tests.metrics_ok"):
                holding.set()
                release.wait(EVENT_TIMEOUT_S)
        finally:
            connection.close()

    skipped_before = sample("opsdeck_job_runs_total", job="tests.metrics_ok", status="skipped")
    timed_before = sample("opsdeck_job_run_duration_seconds_count", job="tests.metrics_ok")
    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(EVENT_TIMEOUT_S)
        assert ok_job.run_now({}) == {"skipped": True}
    finally:
        release.set()
        holder.join(EVENT_TIMEOUT_S)

    assert sample("opsdeck_job_runs_total", job="tests.metrics_ok", status="skipped") == skipped_before + 1
    assert sample("opsdeck_job_run_duration_seconds_count", job="tests.metrics_ok") == timed_before


@pytest.mark.django_db
def test_job_metrics_are_on_the_metrics_endpoint(client):
    ok_job.run_now({})

    response = client.get("/metrics")

    families = {family.name: family for family in text_string_to_metric_families(response.content.decode())}
    runs = families["opsdeck_job_runs"]  # the parser drops the _total suffix of counters
    assert any(s.labels == {"job": "tests.metrics_ok", "status": "succeeded"} and s.value >= 1 for s in runs.samples)
    assert families["opsdeck_job_run_duration_seconds"].type == "histogram"
