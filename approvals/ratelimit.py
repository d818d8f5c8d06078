"""Per-user decision rate limits counted in versions (the guide: 100 approvals, 50 rejections a
minute), in Redis so every web process shares them. Fixed one-minute windows, checked and
consumed atomically by a Lua script; if Redis is unreachable the limit is not enforced (Opsdeck
degrades, it does not fail)."""

import logging
import time

from django.conf import settings
from django.core.cache import cache
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from approvals.exceptions import RateLimited

logger = logging.getLogger("opsdeck.approvals")
WINDOW_S = 60

# KEYS[1] window key; ARGV: amount, limit, ttl ms. Returns {allowed, remaining, ttl_ms}.
_CONSUME = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if current + amount > limit then
  return {0, limit - current, redis.call('PTTL', KEYS[1])}
end
current = redis.call('INCRBY', KEYS[1], amount)
if current == amount then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return {1, limit - current, redis.call('PTTL', KEYS[1])}
"""


def _limit_for(action: str) -> int:
    return {"approval": settings.APPROVALS_PER_MINUTE, "rejection": settings.REJECTIONS_PER_MINUTE}[action]


def current_window() -> int:
    return int(time.time() // WINDOW_S)


def _key(user_id: int, action: str) -> str:
    # Through the cache's key function: the same prefix and versioning as every cache key.
    return cache.make_key(f"approvals:rate:{action}:{user_id}:{current_window()}")


def consume(*, user_id: int, action: str, amount: int) -> str | None:
    """Take `amount` from the user's budget for `action`, or raise RateLimited.

    Returns the key consumed (for refund), or None when Redis was unreachable.
    """
    limit = _limit_for(action)
    key = _key(user_id, action)
    try:
        allowed, remaining, ttl_ms = get_redis_connection("default").eval(
            _CONSUME, 1, key, amount, limit, WINDOW_S * 1000
        )
    except RedisError:
        logger.warning("rate limit not enforced: Redis unreachable", extra={"action": action})
        return None
    if not allowed:
        reset_in_s = max(1, int((ttl_ms if ttl_ms > 0 else WINDOW_S * 1000) / 1000 + 0.999))
        raise RateLimited(action=action, limit=limit, remaining=max(0, int(remaining)), reset_in_s=reset_in_s)
    return key


def refund(key: str | None, amount: int) -> None:
    """Give back what a decision that then failed had consumed."""
    if key is None or amount <= 0:
        return
    try:
        get_redis_connection("default").decrby(key, amount)
    except RedisError:
        logger.warning("rate limit refund lost: Redis unreachable")
