"""Left and right uploads to one job run at once: neither waits for the other's lock (issue 13)."""

import threading

import pytest
from django.db import connection, transaction

from reconciliation.ingest.records import csv_stream_from_text, records_ingest
from reconciliation.models import Record
from tests.reconciliation.factories import CSV_HEADER, JobFactory

pytestmark = pytest.mark.django_db(transaction=True)


def csv_of(prefix: str, count: int):
    rows = [f"{prefix}{i},{i}.00,EUR,2026-03-10,INV-{i},Acme," for i in range(1, count + 1)]
    return csv_stream_from_text("\n".join([CSV_HEADER, *rows]) + "\n")


def test_an_upload_of_one_side_does_not_wait_for_an_uncommitted_upload_of_the_other():
    job = JobFactory()
    left_loaded, right_done = threading.Event(), threading.Event()
    errors = []

    def left_upload_held_open():
        try:
            with transaction.atomic():
                records_ingest(job=job, csv_stream=csv_of("L", 50), side="left")
                left_loaded.set()
                right_done.wait(timeout=60)  # still uncommitted while the right side loads
        except Exception as error:  # reported below, in the test's thread
            errors.append(error)
        finally:
            left_loaded.set()
            connection.close()

    left = threading.Thread(target=left_upload_held_open)
    left.start()
    assert left_loaded.wait(timeout=60)
    try:
        with connection.cursor() as cursor:
            # Waiting on the left upload's locks would fail here instead of hanging.
            cursor.execute("SET lock_timeout = '5s'")
        result = records_ingest(job=job, csv_stream=csv_of("R", 50), side="right")
    finally:
        right_done.set()
        left.join(timeout=60)

    assert not errors
    assert result.inserted == 50
    assert Record.objects.filter(job=job).count() == 100
