"""A circuit breaker in front of the Redis cache: a stalled Redis costs one timeout, not one per call.

The cache ignores Redis errors (IGNORE_EXCEPTIONS), but each call still waits its socket timeout
(0.5 s) first. A request makes several cache calls (throttle history read and write, stats
invalidation...), so with Redis stopped every request took 1-3 s, two sync workers were always
busy and `/health` queued behind them for seconds (`make chaos`, Redis paused 20 s). After a
failed call this process skips Redis for CACHE_BREAKER_S (±50%): calls answer as a miss at once (reads
return the default, writes are dropped, as IGNORE_EXCEPTIONS already does), then one call tries
Redis again.

The price: for up to CACHE_BREAKER_S after Redis returns, cache writes and deletes are still
skipped, so an entry that a write should have invalidated can live until its TTL. That was
already so for every delete during the outage itself.
"""

import functools
import logging
import random
import time

from django.conf import settings
from django_redis.client import DefaultClient
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import ConnectionError as RedisConnectionError

logger = logging.getLogger("opsdeck.cache")
_clock = time.monotonic  # tests move it
_open_until = 0.0
# Plumbing, not cache operations: they never talk to Redis on their own.
_NOT_OPERATIONS = {
    "get_client",
    "get_client_with_index",
    "get_next_client_index",
    "connect",
    "disconnect",
    "close",
    "do_close_clients",
    "encode",
    "decode",
    "make_key",
    "make_pattern",
}


def breaker_open() -> bool:
    return _clock() < _open_until


def reset_breaker() -> None:
    global _open_until
    _open_until = 0.0


def _guarded(operation):
    @functools.wraps(operation)
    def guarded(self, *args, **kwargs):
        if breaker_open():
            # Same exception as a real failure: the cache's IGNORE_EXCEPTIONS turns it into a miss.
            raise ConnectionInterrupted(connection=None) from RedisConnectionError("cache circuit breaker open")
        try:
            return operation(self, *args, **kwargs)
        except ConnectionInterrupted:
            trip_breaker()
            raise

    return guarded


def trip_breaker() -> None:
    """Redis failed: skip it in this process for CACHE_BREAKER_S (±50%)."""
    global _open_until
    if not breaker_open():
        logger.warning("Redis cache failed: skipping it", extra={"for_s": settings.CACHE_BREAKER_S})
    # Jittered: processes that failed together must not all try again together, or every
    # web worker waits out the same timeout at once and nothing answers meanwhile.
    _open_until = _clock() + settings.CACHE_BREAKER_S * random.uniform(0.5, 1.5)  # noqa: S311


class CircuitBreakerClient(DefaultClient):
    """django-redis' DefaultClient with every cache operation behind the breaker."""


for _name, _member in vars(DefaultClient).items():
    if callable(_member) and not _name.startswith("_") and _name not in _NOT_OPERATIONS:
        setattr(CircuitBreakerClient, _name, _guarded(_member))
