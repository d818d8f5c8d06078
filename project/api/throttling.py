"""DRF throttles whose check-and-count is one atomic Redis call.

DRF's SimpleRateThrottle reads a pickled list of timestamps from the cache, decides, and writes
the list back: two round trips with a race between them (8 threads bursting got 102 and 137
requests through limits of 100 and 120), and a list as long as the rate (a raised rate of
100,000/min pickles 100,000 floats per request). These keep DRF's rates, scopes, cache keys and
`Retry-After`, and count with a sliding-window counter (the previous fixed window's count,
weighted by how much of it still overlaps the last `duration` seconds, plus the current one's)
in one Lua script: O(1) memory and one round trip per throttle, and a burst can never pass
more than the limit. A denied request is not counted.

Redis unreachable: the request is allowed (Opsdeck gets slower without Redis, never a 500), and
the cache's circuit breaker (project/cachebreaker.py) is tripped so the next requests do not
each wait out Redis' socket timeout again.

Counted at most once per request, so refused requests can be counted too: DRF's `APIView.initial()`
checks permissions before throttles, so a request refused with 401/403 was never counted and a
client could probe forbidden endpoints (or guess tokens) without limit. The exception handler
(errors.py) runs the view's throttles for such refusals; a refusal raised after the throttles
already ran (an object permission) must not count twice, hence `OncePerRequest`.
"""

import logging

from django.core.cache import cache
from django_redis import get_redis_connection
from redis.exceptions import RedisError
from rest_framework import throttling

from project.cachebreaker import breaker_open, trip_breaker

logger = logging.getLogger("opsdeck.throttle")

# KEYS: current window, previous window. ARGV: limit, window_ms, ms elapsed in current window.
# Returns {allowed (0/1), current count, previous count}.
_SLIDING_WINDOW_LUA = """
local limit = tonumber(ARGV[1])
local window_ms = tonumber(ARGV[2])
local elapsed_ms = tonumber(ARGV[3])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local estimate = previous * (window_ms - elapsed_ms) / window_ms + current
if estimate + 1 > limit then
    return {0, current, previous}
end
current = redis.call('INCR', KEYS[1])
if current == 1 then
    redis.call('PEXPIRE', KEYS[1], 2 * window_ms)
end
return {1, current, previous}
"""


class AtomicRateThrottleMixin:
    """Replaces SimpleRateThrottle's get/decide/set with one sliding-window script call."""

    _script = None

    @classmethod
    def _sliding_window(cls, client):
        # redis-py's Script sends EVALSHA and falls back to EVAL once if the server lost it.
        if cls._script is None or cls._script.registered_client is not client:
            AtomicRateThrottleMixin._script = client.register_script(_SLIDING_WINDOW_LUA)
        return AtomicRateThrottleMixin._script

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.now = self.timer()
        window_ms = self.duration * 1000
        now_ms = int(self.now * 1000)
        window = now_ms // window_ms
        self.elapsed_ms = now_ms - window * window_ms
        keys = [cache.make_key(f"{self.key}:{window}"), cache.make_key(f"{self.key}:{window - 1}")]
        if breaker_open():
            return True  # Redis failed moments ago in this process: do not wait out its timeout again
        try:
            client = get_redis_connection("default")
            allowed, self.current, self.previous = self._sliding_window(client)(
                keys=keys, args=[self.num_requests, window_ms, self.elapsed_ms], client=client
            )
        except (RedisError, OSError):
            logger.warning("throttle check skipped: Redis unreachable", extra={"throttle_key": self.key})
            trip_breaker()
            return True
        return bool(allowed)

    def wait(self):
        """Seconds until the sliding estimate leaves room for one more request."""
        window_s = self.duration
        elapsed_s = self.elapsed_ms / 1000
        room = self.num_requests - 1  # the estimate must fall to this for a request to pass
        if self.current <= room:
            # The previous window's weight has to shrink: previous * (window - t) / window <= room - current.
            if self.previous <= 0:
                return 0.0
            until_s = window_s * (1 - (room - self.current) / self.previous)
            return max(0.0, until_s - elapsed_s)
        # The current window is full: wait into the next one, where it becomes the previous.
        into_next_s = window_s * (1 - room / self.current) if self.current else 0.0
        return (window_s - elapsed_s) + max(0.0, into_next_s)


class OncePerRequest:
    """Remember this throttle's verdict on the request: asking again neither counts nor changes it."""

    def allow_request(self, request, view):
        verdicts = request.__dict__.setdefault("_throttle_verdicts", {})
        key = type(self).__name__
        if key not in verdicts:
            allowed = super().allow_request(request, view)
            verdicts[key] = (allowed, None if allowed else super().wait())
        allowed, self._wait = verdicts[key]
        return allowed

    def wait(self):
        return self._wait


class AnonRateThrottle(OncePerRequest, AtomicRateThrottleMixin, throttling.AnonRateThrottle):
    pass


class UserRateThrottle(OncePerRequest, AtomicRateThrottleMixin, throttling.UserRateThrottle):
    pass


class ScopedRateThrottle(OncePerRequest, AtomicRateThrottleMixin, throttling.ScopedRateThrottle):
    def allow_request(self, request, view):
        # DRF's ScopedRateThrottle reads the scope from the view first; the mixin, listed first
        # so its counting wins, would otherwise run before a rate exists.
        self.scope = getattr(view, self.scope_attr, None)
        if not self.scope:
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)


def throttle_refused_request(request, view):
    """Count a request refused before DRF's throttles ran; a Throttled exception once over the rate."""
    if request is None or view is None or not hasattr(view, "check_throttles"):
        return
    view.check_throttles(request)
