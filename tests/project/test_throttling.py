"""API throttles: DRF's rates and scopes, counted atomically in Redis (project/api/throttling.py)."""

import threading

import pytest
from django.contrib.auth.models import AnonymousUser
from rest_framework.test import APIRequestFactory
from rest_framework.throttling import SimpleRateThrottle

from project.api import throttling
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def request_as(user):
    """A new request: throttles count each request once, however often they are asked."""
    request = APIRequestFactory().get("/api/v1/tasks/")
    request.user = user
    return request


@pytest.mark.parametrize(("rate", "limit"), [("100/min", 100), ("120/min", 120)])
def test_a_burst_from_8_threads_never_passes_more_than_the_limit(monkeypatch, rate, limit):
    # DRF's own throttle let 102 of 100 and 137 of 120 through from 8 threads (get, decide, set).
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"user": rate, "anon": "20/min"})
    user = UserFactory()  # each attempt is a new request from this user
    start = threading.Barrier(8)
    allowed = []

    def burst():
        start.wait()
        for _ in range(40):  # 320 attempts in all
            allowed.append(throttling.UserRateThrottle().allow_request(request_as(user), view=None))

    threads = [threading.Thread(target=burst) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(allowed) == limit
    assert len(allowed) == 320


def test_denied_requests_are_not_counted_and_the_previous_window_fades(monkeypatch):
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"user": "4/min", "anon": "20/min"})
    user = UserFactory()  # each attempt is a new request from this user
    now = [600.0]  # the start of a window (windows are multiples of 60 s)

    def attempt():
        throttle = throttling.UserRateThrottle()
        throttle.timer = lambda: now[0]
        return throttle.allow_request(request_as(user), view=None), throttle

    assert [attempt()[0] for _ in range(6)] == [True] * 4 + [False] * 2
    allowed, throttle = attempt()
    assert not allowed
    # Full window: into the next one until the 4 weigh 3 (a quarter in), 60 + 15 s from now.
    assert throttle.wait() == pytest.approx(75.0)
    now[0] = 660.0 + 15  # next window, 1/4 in: the 4 earlier requests weigh 3
    assert attempt()[0] is True
    assert attempt()[0] is False
    now[0] = 660.0 + 30  # half in: they weigh 2, plus the 1 counted here -> room for 1
    assert attempt()[0] is True


def test_wait_is_when_the_estimate_leaves_room_again(monkeypatch):
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"user": "2/min", "anon": "20/min"})
    user = UserFactory()  # each attempt is a new request from this user
    now = [1200.0]

    def throttle_at(t):
        now[0] = t
        throttle = throttling.UserRateThrottle()
        throttle.timer = lambda: now[0]
        return throttle

    assert throttle_at(1200.0).allow_request(request_as(user), None)
    assert throttle_at(1201.0).allow_request(request_as(user), None)
    # Next window 6 s in: previous 2 weigh 1.8 -> denied; room once 2 * (60 - t) / 60 <= 1, t = 30.
    denied = throttle_at(1266.0)
    assert not denied.allow_request(request_as(user), None)
    assert denied.wait() == pytest.approx(24.0)
    assert throttle_at(1290.0).allow_request(request_as(user), None)


def test_anonymous_requests_are_counted_per_address(monkeypatch):
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"user": "100/min", "anon": "1/min"})
    user = AnonymousUser()  # each attempt is a new request from this user

    assert throttling.AnonRateThrottle().allow_request(request_as(user), None)
    assert not throttling.AnonRateThrottle().allow_request(request_as(user), None)


def test_redis_unreachable_lets_requests_through(monkeypatch):
    from redis.exceptions import ConnectionError as RedisConnectionError

    def unreachable(alias):
        raise RedisConnectionError("down")

    monkeypatch.setattr(throttling, "get_redis_connection", unreachable)
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"user": "1/min", "anon": "1/min"})
    user = UserFactory()  # each attempt is a new request from this user

    assert all(throttling.UserRateThrottle().allow_request(request_as(user), None) for _ in range(3))


def test_after_a_redis_failure_throttles_skip_redis_while_the_cache_breaker_is_open(monkeypatch):
    # A stalled Redis cost every request its socket timeout (make chaos: writes took 1.6 s).
    from redis.exceptions import TimeoutError as RedisTimeoutError

    calls = []

    def stalled(alias):
        calls.append(alias)
        raise RedisTimeoutError("stalled")

    monkeypatch.setattr(throttling, "get_redis_connection", stalled)
    user = UserFactory()

    assert all(throttling.UserRateThrottle().allow_request(request_as(user), None) for _ in range(3))
    assert len(calls) == 1


def test_one_redis_round_trip_per_throttle_check(monkeypatch):
    from django_redis import get_redis_connection

    client = get_redis_connection("default")
    calls = []
    original = client.execute_command

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(client, "execute_command", counting)
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"user": "10/min", "anon": "1/min"})
    throttling.UserRateThrottle().allow_request(request_as(UserFactory()), None)  # loads the script
    calls.clear()

    throttling.UserRateThrottle().allow_request(request_as(UserFactory()), None)

    assert calls == ["EVALSHA"]
