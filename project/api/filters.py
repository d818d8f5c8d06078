"""Filter fields every app uses instead of django-filter's own where those can reach a 500, and the
API's filter backend."""

import datetime
import functools

import django_filters
from django import forms
from django_filters.rest_framework import DjangoFilterBackend

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


class FilterBackend(DjangoFilterBackend):
    """django-filter's backend, skipped for a request that names none of the filters.

    A FilterSet deep-copies its filters, builds a form class and binds and validates a form on
    every request: ~0.6 ms of a task list's first page, which has no query string at all
    (bench/results/profile-*.txt). When no query parameter can reach the filterset's form (no
    parameter is a filter's name, or a filter's name and a `_suffix` as range widgets read), that
    work changes nothing: every filter leaves the queryset as it is for an empty value. Filter
    sets that could act without parameters (a required filter, their own `qs` or
    `filter_queryset`) always run.
    """

    def filter_queryset(self, request, queryset, view):
        filterset_class = self.get_filterset_class(view, queryset)
        if filterset_class is not None and _skippable(filterset_class):
            names = filterset_class.base_filters.keys()
            if not any(_may_read(name, param) for param in request.query_params for name in names):
                return queryset
        return super().filter_queryset(request, queryset, view)


@functools.cache
def _skippable(filterset_class) -> bool:
    return (
        filterset_class.qs is django_filters.FilterSet.qs
        and filterset_class.filter_queryset is django_filters.FilterSet.filter_queryset
        and not any(f.extra.get("required") for f in filterset_class.base_filters.values())
    )


def _may_read(filter_name: str, param: str) -> bool:
    return param == filter_name or param.startswith(filter_name + "_")
