"""The automation's overload guard reads the host's load; every test pins it (a shared CI
machine's CPU must not decide whether a test passes). Tests of the guard pin their own load."""

import pytest

from approvals.jobs import HostLoad

IDLE_HOST = HostLoad(cpu_percent=5.0, memory_percent=20.0)
_pinned = [IDLE_HOST]


def pinned_host_load() -> HostLoad:
    return _pinned[0]


@pytest.fixture(autouse=True)
def host_load(settings):
    """host_load(cpu_percent=..., memory_percent=...) pins what the guard reads; idle by default."""
    settings.AUTOMATION_LOAD_PROBE = "tests.approvals.conftest.pinned_host_load"
    _pinned[0] = IDLE_HOST

    def pin(*, cpu_percent: float = 5.0, memory_percent: float = 20.0) -> None:
        _pinned[0] = HostLoad(cpu_percent=cpu_percent, memory_percent=memory_percent)

    yield pin
    _pinned[0] = IDLE_HOST
