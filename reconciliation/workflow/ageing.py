"""Age buckets of exceptions: 0-2, 3-7, 8-30 and over 30 days since the exception was opened.

Ages are whole days between the exception's creation and now (UTC), so an exception opened
yesterday evening is 1 day old this morning. One definition serves the API list (annotated in
SQL), its filter (created_at ranges, which the partition key prunes), the admin queue and the
ageing analytics.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Case, CharField, Q, Value, When
from django.db.models.functions import Now
from django.utils import timezone


@dataclass(frozen=True)
class AgeBucket:
    name: str
    min_days: int
    max_days: int | None  # inclusive; None: no upper bound


BUCKETS = (
    AgeBucket("0-2", 0, 2),
    AgeBucket("3-7", 3, 7),
    AgeBucket("8-30", 8, 30),
    AgeBucket("30+", 31, None),
)
BUCKET_NAMES = [bucket.name for bucket in BUCKETS]
BY_NAME = {bucket.name: bucket for bucket in BUCKETS}


def age_days(created_at: datetime, now: datetime | None = None) -> int:
    return ((now or timezone.now()) - created_at).days


def bucket_of(created_at: datetime, now: datetime | None = None) -> str:
    days = age_days(created_at, now)
    for bucket in BUCKETS:
        if bucket.max_days is None or days <= bucket.max_days:
            return bucket.name
    return BUCKETS[-1].name


def bucket_condition(name: str, field: str = "created_at") -> Q:
    """Rows whose age falls in bucket `name`: a created_at range relative to now()."""
    bucket = BY_NAME[name]
    # Age >= min_days  <=>  created_at <= now - min_days; age <= max_days  <=>  created_at > now - (max+1) days.
    condition = Q(**{f"{field}__lte": Now() - timedelta(days=bucket.min_days)})
    if bucket.max_days is not None:
        condition &= Q(**{f"{field}__gt": Now() - timedelta(days=bucket.max_days + 1)})
    return condition


def bucket_annotation(field: str = "created_at") -> Case:
    """SQL CASE giving each row its bucket name (same boundaries as bucket_condition)."""
    whens = [
        When(Q(**{f"{field}__gt": Now() - timedelta(days=bucket.max_days + 1)}), then=Value(bucket.name))
        for bucket in BUCKETS
        if bucket.max_days is not None
    ]
    return Case(*whens, default=Value(BUCKETS[-1].name), output_field=CharField())
