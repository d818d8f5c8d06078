"""Rendering rows without DRF's per-field machinery: what a serializer's fields would output.

Writing a page's representation out by hand (rows from `.values()`, no model instances) cut most
of a 50-row page's CPU (bench/results/profile-*.txt). These helpers render a datetime as DRF's
DateTimeField does; each app's written-out serializer is held equal to DRF's by a test
(tests/tasks/test_serializers.py, tests/approvals/test_serializers.py).
"""

import datetime

from django.utils import timezone


def as_row(instance, fields: tuple[str, ...]) -> dict:
    """A row as the written-out serializers take it: a `.values()` dict as it is, a model instance
    (a write's result, a detail) read into one."""
    if isinstance(instance, dict):
        return instance
    return {name: getattr(instance, name) for name in fields}


def drf_datetime(value, zone) -> str | None:
    """serializers.DateTimeField().to_representation: ISO 8601 in the current zone, UTC as Z."""
    if not value:
        return None
    text = (value.astimezone(zone) if timezone.is_aware(value) else timezone.make_aware(value, zone)).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def utc_datetime(value, zone) -> datetime.datetime | str | None:
    """drf_datetime when the current zone is UTC (the default): PostgreSQL's datetimes arrive in
    UTC, and both renderers (orjson with OPT_UTC_Z, DRF's encoder) write a UTC datetime exactly as
    DRF's field does, so it passes through unformatted. Formatting it here was ~6% of a list
    request's CPU under load (bench/results/profile-spy-*.txt)."""
    if value is None or value.tzinfo is datetime.UTC:
        return value
    return drf_datetime(value, zone)


def datetime_renderer(zone):
    """The datetime renderer for `zone`: utc_datetime in UTC, else drf_datetime."""
    return utc_datetime if getattr(zone, "key", None) == "UTC" else drf_datetime
