"""How fast a connection pool gets its connections back after PostgreSQL restarts.

psycopg_pool retries a failed connect after 1 s, then doubles the wait each time (2, 4, 8 s...,
without a ceiling until `reconnect_timeout`). Every pooled connection dies in a restart and each
retries on its own schedule, so a restart of one or two seconds left pools with nothing to hand
out for 5-10 s more: `make chaos` saw requests wait the whole DB_POOL_TIMEOUT_S after the
database was back. Retrying from 0.1 s with a 2 s ceiling gets a pool back within about 2 s of
the database, at a cost of one failed connect per broken connection every 2 s while it is down.
"""

RECONNECT_FIRST_DELAY_S = 0.1
RECONNECT_MAX_DELAY_S = 2.0


def install_quick_pool_reconnect() -> None:
    """Bound psycopg_pool's reconnect backoff (class-wide: Django builds the pools itself)."""
    from psycopg_pool.base import AttemptWithBackoff

    if getattr(AttemptWithBackoff, "_opsdeck_bounded", False):
        return
    unbounded_update_delay = AttemptWithBackoff.update_delay

    def update_delay(self, now: float) -> None:
        unbounded_update_delay(self, now)
        self.delay = min(self.delay, RECONNECT_MAX_DELAY_S)

    AttemptWithBackoff.INITIAL_DELAY = RECONNECT_FIRST_DELAY_S
    AttemptWithBackoff.update_delay = update_delay
    AttemptWithBackoff._opsdeck_bounded = True
