"""The automation's guard: database signals skip a run, never more than N times in a row; the
host's CPU is no reason. Every input is pinned (conftest.database_signals)."""

import sys

import pytest

from approvals import guard, jobs
from approvals.guard import DatabaseSignals, guard_verdict
from approvals.models import Version
from project.models import JobRun
from tests.approvals.factories import RuleFactory, VersionFactory

SHORT = {"field": "content_length", "op": "lt", "value": 20}
IDLE = DatabaseSignals(lock_waits_on_versions=0, active_backends=1, connection_budget=100)


@pytest.mark.parametrize(
    ("signals", "reason"),
    [
        ({"lock_waits_on_versions": 6}, "lock waits on versions 6 > 5"),
        ({"active_backends": 81}, "active backends 81 > 80 of 100"),
        ({"replica_lag_s": 31.0}, "replica lag 31s > 30s"),
        ({"queue_depth": 101}, "queue depth 101 > 100"),
    ],
)
def test_each_database_signal_over_its_limit_skips_and_says_why(signals, reason):
    verdict = guard_verdict(DatabaseSignals(**{**IDLE.__dict__, **signals}), consecutive_skips=0)
    assert (verdict.skip, verdict.reason) == (True, reason)


@pytest.mark.parametrize(
    "signals",
    [
        {"lock_waits_on_versions": 5},
        {"active_backends": 80},
        {"replica_lag_s": 30.0},
        {"replica_lag_s": None},
        {"queue_depth": 100},
        {"queue_depth": None},
    ],
)
def test_signals_at_their_limit_or_unknown_do_not_skip(signals):
    assert guard_verdict(DatabaseSignals(**{**IDLE.__dict__, **signals}), consecutive_skips=0).skip is False


def test_after_the_maximum_skips_in_a_row_one_small_batch_runs_and_says_so(settings):
    busy = DatabaseSignals(**{**IDLE.__dict__, "lock_waits_on_versions": 9})
    settings.AUTOMATION_GUARD_MAX_CONSECUTIVE_SKIPS = 3
    assert guard_verdict(busy, consecutive_skips=2).skip is True
    verdict = guard_verdict(busy, consecutive_skips=3)
    assert (verdict.skip, verdict.small_batch) == (False, True)
    assert verdict.note == "one small batch after 3 skips: lock waits on versions 9 > 5"


@pytest.mark.django_db
def test_the_job_skips_while_busy_then_runs_one_small_batch_and_resets(settings, database_signals):
    settings.AUTOMATION_GUARD_MAX_CONSECUTIVE_SKIPS = 2
    settings.AUTOMATION_GUARD_SMALL_BATCH_SIZE = 3
    RuleFactory(conditions=SHORT, is_active=True)
    VersionFactory.create_batch(5, content="tiny")
    database_signals(active_backends=95)

    first, second = jobs.run_automation.run_now({}), jobs.run_automation.run_now({})
    assert first == second == {"skipped": "active backends 95 > 80 of 100"}
    assert Version.objects.filter(status="pending").count() == 5

    forced = jobs.run_automation.run_now({})
    assert (forced["batches"], forced["decided"]) == (1, 3)
    assert forced["guard"] == "one small batch after 2 skips: active backends 95 > 80 of 100"

    # The count starts again: the next busy run is skipped.
    assert jobs.run_automation.run_now({}) == {"skipped": "active backends 95 > 80 of 100"}
    statuses = list(JobRun.objects.order_by("id").values_list("status", flat=True))
    assert statuses == ["skipped", "skipped", "succeeded", "skipped"]


@pytest.mark.django_db
def test_the_default_probe_reads_the_database_and_finds_it_idle_here():
    signals = guard.database_signals()
    assert signals.lock_waits_on_versions == 0
    assert signals.connection_budget > 0
    assert signals.replica_lag_s is None  # no replica configured in tests


def test_the_guard_does_not_read_the_host():
    import approvals.guard
    import approvals.jobs

    for module in (approvals.guard, approvals.jobs):
        assert "psutil" not in vars(module)
    assert not any(name.startswith("approvals") and "psutil" in vars(mod) for name, mod in sys.modules.items())
