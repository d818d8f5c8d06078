"""DRF's throttles, counted at most once per request, so refused requests can be counted too.

DRF's `APIView.initial()` checks permissions before throttles: a request refused with 401/403 was
never counted, so a client could probe forbidden endpoints (or guess tokens) without limit. The
exception handler (errors.py) runs the view's throttles for such refusals; a refusal raised after
the throttles already ran (an object permission) must not count twice, hence `OncePerRequest`.
"""

from rest_framework import throttling


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


class AnonRateThrottle(OncePerRequest, throttling.AnonRateThrottle):
    pass


class UserRateThrottle(OncePerRequest, throttling.UserRateThrottle):
    pass


class ScopedRateThrottle(OncePerRequest, throttling.ScopedRateThrottle):
    pass


def throttle_refused_request(request, view):
    """Count a request refused before DRF's throttles ran; a Throttled exception once over the rate."""
    if request is None or view is None or not hasattr(view, "check_throttles"):
        return
    view.check_throttles(request)
