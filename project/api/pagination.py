"""Cursor pagination for every list endpoint, built on django-cursor-pagination.

Keyset pagination over a unique, indexed, non-null ordering (default `-created_at, -id`): no
OFFSET and no COUNT, so page 18,000 costs what page 1 does. What this adds to the library:

- cursors carry typed values and a direction, are decoded and type-checked before use, and any
  malformed, truncated or tampered cursor is a 400 ("invalid cursor"), never a 500;
- the seek condition is a row-value comparison `(created_at, id) < (%s, %s)` that PostgreSQL
  turns into an index range scan (the library's expanded OR form is not an index condition);
- responses are `{"results", "next", "previous"}` with absolute URLs.
"""

import base64
import binascii
import decimal
import json
import math

import orjson
from cursor_pagination import CursorPaginator as LibraryCursorPaginator
from cursor_pagination import reverse_ordering
from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from rest_framework import pagination
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from project.api.filters import utc_offset_in_range
from project.db.expressions import RowComparison
from project.partitions import ReadWindow

DEFAULT_ORDERING = ("-created_at", "-id")
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
# Cursors this API issues are a few dozen bytes; anything much longer is not one of them.
MAX_CURSOR_LENGTH = 1024


class InvalidCursor(ValidationError):
    def __init__(self, why: str):
        super().__init__({"cursor": [f"Invalid cursor: {why}."]}, code="invalid_cursor")


class KeysetPaginator(LibraryCursorPaginator):
    """The library's paginator with typed cursors and an index-friendly seek condition."""

    def __init__(self, queryset, ordering):
        self.fields = [self._ordering_field(queryset, name.lstrip("-")) for name in ordering]
        super().__init__(queryset, ordering)

    @staticmethod
    def _ordering_field(queryset, name: str) -> models.Field:
        """The model field (or annotation, e.g. a search rank) a cursor value is typed by."""
        if name in queryset.query.annotations:
            field = queryset.query.annotations[name].output_field.clone()
            field.name = field.attname = name
            return field
        field = queryset.model._meta.get_field(name)
        if field.null:
            raise ValueError(f"cursor ordering field {name!r} must be NOT NULL")
        return field

    def _nulls_ordering(self, ordering, from_last=False):
        # Every ordering field is NOT NULL, so plain ORDER BY matches a plain btree index.
        return list(ordering)

    def apply_cursor(self, cursor, queryset, from_last, reverse=False):
        values = cursor  # already decoded and typed by the pagination class
        descending = {name.startswith("-") for name in self.ordering}
        if len(descending) == 1:
            # One direction for all columns: a row-value comparison, served by the index.
            going_down = descending.pop() != reverse
            columns = [name.lstrip("-") for name in self.ordering]
            return queryset.filter(RowComparison(columns, "<" if going_down else ">", values))
        return queryset.filter(self._expanded_seek(values, reverse))

    def _expanded_seek(self, values, reverse):
        # Mixed directions cannot be one row comparison: a < x OR (a = x AND b > y) ...
        condition = models.Q(pk__in=[])
        equal_so_far = {}
        for name, value in zip(self.ordering, values, strict=True):
            column = name.lstrip("-")
            lookup = "lt" if name.startswith("-") != reverse else "gt"
            condition |= models.Q(**equal_so_far, **{f"{column}__{lookup}": value})
            equal_so_far[column] = value
        return condition

    def encode_position(self, instance, direction: str) -> str:
        values = [self._position_value(field, instance) for field in self.fields]
        raw = json.dumps([direction, *values], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def _position_value(field: models.Field, instance) -> str:
        # A page holds model instances or, for reads that skip them, dicts of the row's values.
        value = instance[field.attname] if isinstance(instance, dict) else getattr(instance, field.attname)
        # isoformat keeps microseconds and the offset; repr(float) round-trips exactly.
        return (
            value.isoformat()
            if hasattr(value, "isoformat")
            else repr(value)
            if isinstance(value, float)
            else str(value)
        )

    def decode_position(self, cursor: str) -> tuple[str, list]:
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise InvalidCursor("it is not a cursor this API issued")
        try:
            padded = cursor + "=" * (-len(cursor) % 4)
            # validate=True: the lenient default silently drops characters outside the alphabet.
            raw = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
            # orjson: no recursion to exhaust ("[" * 2500 is a decode error, not a RecursionError).
            decoded = orjson.loads(raw)
        except (binascii.Error, ValueError, UnicodeError, RecursionError):
            raise InvalidCursor("it is not a cursor this API issued") from None
        if not isinstance(decoded, list) or len(decoded) != len(self.fields) + 1:
            raise InvalidCursor("wrong number of parts")
        direction, raw_values = decoded[0], decoded[1:]
        if direction not in ("n", "p"):
            raise InvalidCursor("unknown direction")
        return direction, [self._typed(field, raw) for field, raw in zip(self.fields, raw_values, strict=True)]

    @staticmethod
    def _typed(field: models.Field, raw):
        if not isinstance(raw, str):
            raise InvalidCursor(f"{field.name} is not a string")
        if "\x00" in raw:  # PostgreSQL text cannot hold NUL: the query itself would fail
            raise InvalidCursor(f"{field.name} contains a NUL character")
        try:
            value = field.to_python(raw)
        except (DjangoValidationError, ValueError, TypeError, OverflowError):
            raise InvalidCursor(f"{field.name} has the wrong type") from None
        if value is None:
            raise InvalidCursor(f"{field.name} is empty")
        if isinstance(field, models.DateTimeField) and value.tzinfo is None:
            raise InvalidCursor(f"{field.name} has no time zone")
        if isinstance(field, models.DateTimeField) and not utc_offset_in_range(value):
            raise InvalidCursor(f"{field.name} has a UTC offset beyond 15:59")
        if isinstance(value, float) and not math.isfinite(value):
            # A search rank is never nan or infinite; PostgreSQL would compare them as numbers.
            raise InvalidCursor(f"{field.name} is not a finite number")
        if isinstance(value, decimal.Decimal) and not value.is_finite():
            raise InvalidCursor(f"{field.name} is not a finite number")
        if isinstance(value, int) and not BIGINT_MIN <= value <= BIGINT_MAX:
            raise InvalidCursor(f"{field.name} is out of range")
        return value


class TimeWindowPaginator(KeysetPaginator):
    """Keyset pages of a table range-partitioned on its first ordering column (newest first),
    read one time window at a time.

    Without a time bound, PostgreSQL plans `ORDER BY created_at DESC, id DESC LIMIT n` over a
    partitioned table as a Merge Append that starts a scan in every partition, and a filter
    served by a bitmap (metadata @> ...) sorts every match of every partition before the first
    row. A page is nearly always filled by the newest partition, so this asks the windows in
    turn (from project.partitions.monthly_read_windows, whose bounds let the planner prune the
    other partitions) and stops as soon as the page is full: one query for a typical page, at
    most one per window when the filter matches few rows. Paging back (newer rows) walks the
    windows oldest first from the cursor's.
    """

    def __init__(self, queryset, ordering, windows: list[ReadWindow]):
        if not ordering[0].startswith("-"):
            raise ValueError("TimeWindowPaginator reads newest first: the first ordering column must descend")
        super().__init__(queryset, ordering)
        self.column = ordering[0].lstrip("-")
        self.windows = windows

    def page(self, first=None, last=None, after=None, before=None):
        size = first if first is not None else last
        newer = last is not None
        queryset = self.queryset
        if after is not None:
            queryset = self.apply_cursor(after, queryset, from_last=newer)
        if before is not None:
            queryset = self.apply_cursor(before, queryset, from_last=newer, reverse=True)
        if newer:
            queryset = queryset.order_by(*self._nulls_ordering(reverse_ordering(self.ordering), from_last=True))
        rows = []
        for start, end in self._windows_from(after or before, newer=newer):
            window = queryset
            if start is not None:
                window = window.filter(**{f"{self.column}__gte": start})
            if end is not None:
                window = window.filter(**{f"{self.column}__lt": end})
            rows.extend(window[: size + 1 - len(rows)])
            if len(rows) > size:
                break
        items = rows[:size]
        if newer:
            items.reverse()
        return self._get_cursor_page(items, len(rows) > size, first, last, after, before)

    def _windows_from(self, position, *, newer: bool):
        """The windows still to read, in reading order, from the cursor's position on."""
        moment = position[0] if position else None
        if newer:
            return [(start, end) for start, end in reversed(self.windows) if not moment or end is None or end > moment]
        return [(start, end) for start, end in self.windows if not moment or start is None or start <= moment]


class CursorPagination(pagination.BasePagination):
    """DRF pagination class. A view may set `cursor_ordering` to another unique indexed ordering."""

    cursor_query_param = "cursor"
    page_size_query_param = "page_size"

    def paginate_queryset(self, queryset, request, view=None):
        ordering = tuple(getattr(view, "cursor_ordering", DEFAULT_ORDERING))
        self.request = request
        self.page_size = self._page_size(request)
        # A view may bring its own paginator (the activity log reads one time window at a time).
        make_paginator = getattr(view, "cursor_paginator", KeysetPaginator)
        self.paginator = make_paginator(queryset, ordering)
        cursor = request.query_params.get(self.cursor_query_param)
        if cursor:
            direction, position = self.paginator.decode_position(cursor)
        else:
            direction, position = "n", None
        if direction == "n":
            self.page = self.paginator.page(first=self.page_size, after=position)
        else:
            self.page = self.paginator.page(last=self.page_size, before=position)
        return list(self.page)

    def _page_size(self, request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return settings.API_PAGE_SIZE_DEFAULT
        try:
            size = int(raw)
        except ValueError:
            size = 0
        if not 1 <= size <= settings.API_PAGE_SIZE_MAX:
            raise ValidationError(
                {"page_size": [f"Must be a whole number from 1 to {settings.API_PAGE_SIZE_MAX}."]},
                code="invalid_page_size",
            )
        return size

    def _link(self, instance, direction: str) -> str:
        url = self.request.build_absolute_uri()
        return replace_query_param(url, self.cursor_query_param, self.paginator.encode_position(instance, direction))

    def get_next_link(self):
        if not self.page.has_next or not self.page:
            return None
        return self._link(self.page[-1], "n")

    def get_previous_link(self):
        if not self.page.has_previous:
            return None
        if not self.page:
            return remove_query_param(self.request.build_absolute_uri(), self.cursor_query_param)
        return self._link(self.page[0], "p")

    def get_paginated_response(self, data):
        return Response({"results": data, "next": self.get_next_link(), "previous": self.get_previous_link()})

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["results", "next", "previous"],
            "properties": {
                "results": schema,
                "next": {"type": "string", "format": "uri", "nullable": True},
                "previous": {"type": "string", "format": "uri", "nullable": True},
            },
        }

    def get_schema_operation_parameters(self, view):
        return [
            {
                "name": self.cursor_query_param,
                "in": "query",
                "required": False,
                "description": "Opaque cursor from a `next` or `previous` link.",
                "schema": {"type": "string"},
            },
            {
                "name": self.page_size_query_param,
                "in": "query",
                "required": False,
                "description": f"Rows per page, 1 to {settings.API_PAGE_SIZE_MAX} "
                f"(default {settings.API_PAGE_SIZE_DEFAULT}).",
                "schema": {"type": "integer", "minimum": 1, "maximum": settings.API_PAGE_SIZE_MAX},
            },
        ]
