"""Filter fields every app uses instead of django-filter's own where those can reach a 500."""

import datetime

import django_filters
from django import forms

# PostgreSQL's timestamptz input takes UTC offsets up to ±15:59; Python's datetime up to ±23:59.
MAX_UTC_OFFSET = datetime.timedelta(hours=15, minutes=59)


def utc_offset_in_range(value: datetime.datetime) -> bool:
    offset = value.utcoffset()
    return offset is None or abs(offset) <= MAX_UTC_OFFSET


class IsoDateTimeField(django_filters.fields.IsoDateTimeField):
    default_error_messages = {"utc_offset": "The UTC offset must be between -15:59 and +15:59."}

    def to_python(self, value):
        parsed = super().to_python(value)
        if parsed is not None and not utc_offset_in_range(parsed):
            raise forms.ValidationError(self.error_messages["utc_offset"], code="invalid")
        return parsed


class IsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """ISO 8601 datetimes; an offset PostgreSQL cannot take (`+20:00`) is a 400 naming the parameter,
    not an InvalidTimeZoneDisplacementValue at query time."""

    field_class = IsoDateTimeField


class IdField(forms.IntegerField):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", 2**63 - 1)
        super().__init__(*args, **kwargs)


class IdFilter(django_filters.Filter):
    """A row id to filter by (`?job=`, `?tenant=`): a whole number, checked for range, never looked up.

    Unlike a ModelChoiceFilter it does not say whether the row exists: another tenant's id and an id
    that exists nowhere both give an empty page (no existence oracle across tenants)."""

    field_class = IdField


class DecimalField(forms.DecimalField):
    # Bounded like the numbers filtered (amounts are numeric(18,4)): "1e-999999" or "-1e999999"
    # would otherwise reach PostgreSQL as a numeric literal it cannot hold (a 500).
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_digits", 30)
        kwargs.setdefault("decimal_places", 10)
        super().__init__(*args, **kwargs)


class DecimalFilter(django_filters.NumberFilter):
    """A number to compare with (`?amount_min=`): finite, at most 20 digits before the point and 10
    after, else a 400 naming the parameter."""

    field_class = DecimalField
