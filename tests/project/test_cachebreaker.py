"""A stalled Redis costs the cache one socket timeout per CACHE_BREAKER_S, not one per call."""

import copy
import os
import signal
import time

import pytest
from django.core.cache import cache

from project import cachebreaker
from tests.project.test_health import private_redis  # noqa: F401 (fixture)


@pytest.fixture
def stallable_cache(settings, private_redis):  # noqa: F811 (the imported fixture)
    socket_path, process = private_redis
    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["LOCATION"] = f"unix://{socket_path}?db=0"
    settings.CACHES = caches  # resets django.core.cache.caches
    yield process
    os.kill(process.pid, signal.SIGCONT)


def test_a_stalled_redis_costs_one_timeout_then_cache_calls_answer_as_misses_at_once(settings, stallable_cache):
    cache.set("greeting", "hello")
    os.kill(stallable_cache.pid, signal.SIGSTOP)  # stalled: connects succeed, replies never come

    started = time.monotonic()
    assert cache.get("greeting") is None
    first_call_s = time.monotonic() - started
    started = time.monotonic()
    for _ in range(10):
        assert cache.get("greeting") is None
        cache.set("greeting", "again")
    next_twenty_calls_s = time.monotonic() - started

    socket_timeout_s = settings.CACHES["default"]["OPTIONS"]["SOCKET_TIMEOUT"]
    assert first_call_s >= socket_timeout_s * 0.9  # the one call that found out
    # Without the breaker each of the twenty waits the socket timeout (10 s in all).
    assert next_twenty_calls_s < socket_timeout_s
    assert cachebreaker.breaker_open()


def test_after_the_breaker_window_one_call_tries_redis_again_and_the_cache_is_back(
    settings, stallable_cache, monkeypatch
):
    os.kill(stallable_cache.pid, signal.SIGSTOP)
    assert cache.get("greeting") is None
    os.kill(stallable_cache.pid, signal.SIGCONT)
    cache.set("greeting", "dropped while open")
    assert cache.get("greeting") is None  # still open: skipped, not waited for

    later = time.monotonic() + settings.CACHE_BREAKER_S * 1.5 + 1  # past the longest jittered window
    monkeypatch.setattr(cachebreaker, "_clock", lambda: later)
    cache.set("greeting", "hello again")

    assert cache.get("greeting") == "hello again"
    assert not cachebreaker.breaker_open()
