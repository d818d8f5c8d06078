"""Beat's scheduler: django-celery-beat's DatabaseScheduler, with every crontab message stamped
with its schedule and slot (the minute it fired for).

Operators do start two beats by accident (a deploy overlap, a failover). Each sends every due
schedule; the job runner lets only the first message of a slot claim it (a unique JobRun per
schedule and slot) and records the other as a skipped duplicate. Crontabs fire on minute
boundaries and beat ticks at least every 5 s, so two beats stamp the same minute.
"""

from datetime import datetime

from celery.schedules import crontab
from django.utils import timezone
from django_celery_beat.schedulers import DatabaseScheduler

SLOT_HEADER = "opsdeck_slot"
SCHEDULE_HEADER = "opsdeck_schedule"


def slot_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


class SlottedDatabaseScheduler(DatabaseScheduler):
    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        # reserve() builds a fresh entry from the model (its options too): stamp that one.
        entry = self.reserve(entry) if advance else entry
        if isinstance(entry.schedule, crontab):
            headers = {
                **(entry.options.get("headers") or {}),
                SLOT_HEADER: slot_of(timezone.now()).isoformat(),
                SCHEDULE_HEADER: entry.name,
            }
            entry.options = {**entry.options, "headers": headers}
        return super().apply_async(entry, producer, advance=False, **kwargs)
