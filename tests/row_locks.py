"""A row lock held by another connection, for tests of SKIP LOCKED claims (no sleeps: events)."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection, transaction

EVENT_TIMEOUT_S = 30


@contextmanager
def row_locked_elsewhere(model, pk) -> Iterator[None]:
    """While the block runs, another thread's transaction holds SELECT ... FOR UPDATE on the row."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                model.objects.select_for_update().get(pk=pk)
                held.set()
                release.wait(timeout=EVENT_TIMEOUT_S)
        finally:
            connection.close()  # the thread's own connection

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(timeout=EVENT_TIMEOUT_S), "the other transaction never took the lock"
        yield
    finally:
        release.set()
        holder.join(timeout=EVENT_TIMEOUT_S)
