"""The router every app registers its viewsets with."""

from django.db import models
from rest_framework.routers import DefaultRouter

# [0-9], not \d: \d matches any Unicode digit, which int() then refuses or misreads.
INTEGER_KEY_PATTERN = "[0-9]{1,19}"
_INTEGER_KEYS = (models.AutoField, models.BigAutoField, models.SmallAutoField, models.IntegerField)


class Router(DefaultRouter):
    """DRF's router, with integer primary keys matched as ASCII digits in the URL.

    `/versions/AAA/approve/`, `/jobs/null,null/` or `/jobs/²/` (a Unicode digit) then never reach a
    view that would turn them into a ValueError: they are a 404 like any unknown URL. A viewset that
    looks rows up by something else sets `lookup_value_regex` itself, which wins.
    """

    def get_lookup_regex(self, viewset, lookup_prefix=""):
        if getattr(viewset, "lookup_value_regex", None) is None and _has_integer_key(viewset):
            # A subclass that only adds the pattern: the viewset class itself is left as it is.
            viewset = type(viewset.__name__, (viewset,), {"lookup_value_regex": INTEGER_KEY_PATTERN})
        return super().get_lookup_regex(viewset, lookup_prefix)


def _has_integer_key(viewset) -> bool:
    queryset = getattr(viewset, "queryset", None)
    if queryset is None:
        return False
    lookup = getattr(viewset, "lookup_field", "pk")
    meta = queryset.model._meta
    field = meta.pk if lookup == "pk" else meta.get_field(lookup)
    return isinstance(field, _INTEGER_KEYS)
