"""The automation's guard reads database signals; every test pins them (idle by default), so
neither a shared CI machine nor another test's connections decide whether a test passes. Tests of
the guard pin their own signals."""

import pytest
from django.core.cache import cache

from approvals.guard import CONSECUTIVE_SKIPS_CACHE_KEY, DatabaseSignals

IDLE_DATABASE = DatabaseSignals(lock_waits_on_versions=0, active_backends=1, connection_budget=100)
_pinned = [IDLE_DATABASE]


def pinned_database_signals() -> DatabaseSignals:
    return _pinned[0]


@pytest.fixture(autouse=True)
def database_signals(settings):
    """database_signals(lock_waits_on_versions=..., ...) pins what the guard reads; idle by default."""
    settings.AUTOMATION_GUARD_PROBE = "tests.approvals.conftest.pinned_database_signals"
    _pinned[0] = IDLE_DATABASE
    cache.delete(CONSECUTIVE_SKIPS_CACHE_KEY)

    def pin(**signals) -> None:
        _pinned[0] = DatabaseSignals(**{**IDLE_DATABASE.__dict__, **signals})

    yield pin
    _pinned[0] = IDLE_DATABASE
    cache.delete(CONSECUTIVE_SKIPS_CACHE_KEY)
