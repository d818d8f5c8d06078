"""What the benchmarks share: one request timed through a view, and percentiles."""

import time

from rest_framework.test import force_authenticate


def timed_request(view, request, user, **view_kwargs) -> tuple[float, object]:
    """(milliseconds, rendered response) of one request through `view`, authenticated as `user`."""
    force_authenticate(request, user=user)
    started = time.perf_counter()
    response = view(request, **view_kwargs)
    response.render()
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, response.content[:300]
    return elapsed_ms, response


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]
