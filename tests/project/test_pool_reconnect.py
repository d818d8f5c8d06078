"""Pools get their connections back within seconds of a PostgreSQL restart (make chaos)."""

from psycopg_pool.base import AttemptWithBackoff

from project.db.pool import RECONNECT_MAX_DELAY_S


def test_a_pool_retries_a_failed_connect_quickly_and_never_waits_more_than_the_ceiling():
    attempt = AttemptWithBackoff(timeout=300)
    delays = []
    for now in range(20):  # twenty failed connects in a row (a long outage)
        attempt.update_delay(float(now))
        delays.append(attempt.delay)
    # psycopg_pool's own backoff starts at 1 s and doubles without a ceiling: after a 2 s restart
    # the next attempt could be 4-8 s away, longer than a request waits for a connection.
    assert delays[0] <= 0.11
    assert max(delays) <= RECONNECT_MAX_DELAY_S
    assert delays[-1] == RECONNECT_MAX_DELAY_S  # still retrying, at the ceiling


def test_the_backoff_still_gives_up_at_the_pools_reconnect_timeout():
    attempt = AttemptWithBackoff(timeout=3)
    attempt.update_delay(0.0)
    assert not attempt.time_to_give_up(2.9)
    assert attempt.time_to_give_up(3.0)
