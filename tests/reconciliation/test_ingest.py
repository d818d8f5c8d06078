"""Loading records: CSV and JSON through COPY, checked in SQL, all or nothing unless told to skip."""

from decimal import Decimal

import pytest

from reconciliation.errors import InvalidUpload
from reconciliation.ingest.records import MAX_JSON_ROWS, csv_stream_from_text, records_ingest
from reconciliation.models import Record
from tests.reconciliation.factories import JobFactory

pytestmark = pytest.mark.django_db

HEADER = "external_id,amount,currency,booked_on,reference,counterparty,description"


def ingest_csv(job, text: str, **kwargs):
    return records_ingest(job=job, csv_stream=csv_stream_from_text(text), **kwargs)


def test_a_csv_is_loaded_with_normalized_fields_and_extra_columns_kept_in_raw():
    job = JobFactory()
    text = (
        "\ufeffExternal_ID,amount,currency,booked_on,reference,branch\n"
        'L1,-12.5,eur,2026-02-28,"ref: inv-2026/0012, a",Berlin\n'
    )

    result = ingest_csv(job, text, side="left")

    record = Record.objects.get(job=job)
    assert result.as_dict() == {"received": 1, "inserted": 1, "unchanged": 0, "rejected": 0, "errors": []}
    assert (str(record.amount), record.currency, str(record.booked_on)) == ("-12.5000", "EUR", "2026-02-28")
    assert record.reference_norm == "INV20260012A"
    assert record.raw == {"branch": "Berlin"}
    assert (record.tenant_id, record.side) == (job.tenant_id, "left")
    assert not hasattr(record, "matched")  # nothing matched yet


def test_every_bad_row_is_reported_with_its_number_and_nothing_is_imported():
    job = JobFactory()
    rows = [
        "L1,10.00,EUR,2026-01-31,,,",  # good
        ",10.00,EUR,2026-01-31,,,",  # no external id
        "L3,10.12345,EUR,2026-01-31,,,",  # 5 decimals
        "L4,10.00,EURO,2026-02-29,,,",  # currency, and 2026 is no leap year
        "L1,11.00,EUR,2026-01-31,,,",  # duplicate of row 1
    ]

    with pytest.raises(InvalidUpload) as raised:
        ingest_csv(job, "\n".join([HEADER, *rows]) + "\n", side="left")

    assert raised.value.bad_rows == 4
    assert raised.value.row_errors == [
        {"row": 2, "errors": ["external_id: required"]},
        {"row": 3, "errors": ["amount: must be a decimal number with at most 14 digits before and 4 after the point"]},
        {
            "row": 4,
            "errors": ["currency: must be a 3-letter ISO 4217 code", "booked_on: must be a date written YYYY-MM-DD"],
        },
        {"row": 5, "errors": ["external_id: also on row 1 of this upload"]},
    ]
    assert not Record.objects.filter(job=job).exists()


def test_on_error_skip_imports_the_good_rows_and_reports_the_bad():
    job = JobFactory()

    result = ingest_csv(
        job, f"{HEADER}\nL1,10,EUR,2026-01-31,,,\nL2,x,EUR,2026-01-31,,,\n", side="left", on_error="skip"
    )

    assert (result.inserted, result.rejected) == (1, 1)
    assert result.errors[0]["row"] == 2
    assert list(Record.objects.filter(job=job).values_list("external_id", flat=True)) == ["L1"]


def test_reuploading_the_same_records_changes_nothing_but_different_values_are_an_error():
    job = JobFactory()
    text = f"{HEADER}\nL1,10,EUR,2026-01-31,A,,\nL2,20,EUR,2026-01-31,B,,\n"
    ingest_csv(job, text, side="left")

    again = ingest_csv(job, text, side="left")
    assert (again.inserted, again.unchanged) == (0, 2)

    with pytest.raises(InvalidUpload) as raised:
        ingest_csv(job, f"{HEADER}\nL1,10.01,EUR,2026-01-31,A,,\n", side="left")
    assert "already imported with different values" in raised.value.row_errors[0]["errors"][0]
    assert Record.objects.filter(job=job).count() == 2


def test_the_same_external_id_on_both_sides_is_two_records():
    job = JobFactory()
    ingest_csv(job, "external_id,side,amount,currency,booked_on\nX1,left,1,EUR,2026-01-01\nX1,RIGHT,1,EUR,2026-01-01\n")
    assert sorted(Record.objects.filter(job=job).values_list("side", flat=True)) == ["left", "right"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the CSV is empty"),
        ("external_id,amount\n", "missing required columns: currency, booked_on"),
        ("external_id,amount,currency,booked_on,amount\n", "columns appear more than once: amount"),
        ("external_id,amount,currency,booked_on,Bad Name\n", "column 'bad name'"),
        (f'{HEADER}\nL1,"10,EUR,2026-01-01,,,\n', "the CSV cannot be read"),
        (f"{HEADER}\nL1,10,EUR\n", "the CSV cannot be read"),
    ],
)
def test_an_unreadable_csv_is_refused_with_the_reason(text, message):
    job = JobFactory()
    with pytest.raises(InvalidUpload, match=message):
        ingest_csv(job, text, side="left")
    assert not Record.objects.filter(job=job).exists()


def test_rows_without_a_side_are_refused():
    job = JobFactory()
    with pytest.raises(InvalidUpload) as raised:
        ingest_csv(job, f"{HEADER}\nL1,10,EUR,2026-01-31,,,\n")
    assert raised.value.row_errors[0]["errors"] == ["side: must be left or right (a side column, or ?side=)"]


def test_a_json_array_goes_through_the_same_checks():
    job = JobFactory()
    rows = [
        {
            "external_id": "J1",
            "amount": "5.25",
            "currency": "usd",
            "booked_on": "2026-01-01",
            "side": "right",
            "description": "tab\\there\nand a newline",
            "meta": {"batch": 7},
        },
        {"external_id": "J2", "amount": {"value": 1}, "currency": "USD", "booked_on": "2026-01-01", "side": "right"},
    ]

    with pytest.raises(InvalidUpload) as raised:
        records_ingest(job=job, json_rows=rows)
    assert raised.value.row_errors == [
        {"row": 2, "errors": ["amount: must be a decimal number with at most 14 digits before and 4 after the point"]}
    ]

    records_ingest(job=job, json_rows=rows[:1])
    record = Record.objects.get(job=job)
    assert record.description == "tab\\there\nand a newline"
    assert record.raw == {"meta": '{"batch": 7}'}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ({"external_id": "x"}, "must be a JSON array"),
        ([1, 2], "row 1: each record must be a JSON object"),
        ([{}] * (MAX_JSON_ROWS + 1), "at most 10000 records"),
    ],
)
def test_json_that_is_not_an_array_of_objects_is_refused(rows, message):
    with pytest.raises(InvalidUpload, match=message):
        records_ingest(job=JobFactory(), json_rows=rows, side="left")


def test_an_upload_that_loses_a_race_to_another_upload_of_the_same_records_asks_for_a_retry(monkeypatch):
    import dataclasses

    from psycopg import sql

    from reconciliation.errors import ConcurrentUpload
    from reconciliation.ingest import records as ingest

    job = JobFactory()
    # L1 is there already: the one-statement insert meets it, and the full check runs.
    ingest_csv(job, f"{HEADER}\nL1,10,EUR,2026-01-31,A,,\n", side="left")
    text = f"{HEADER}\nL1,10,EUR,2026-01-31,A,,\nL2,20,EUR,2026-01-31,B,,\n"
    check_then_insert = ingest._stage_and_check

    def another_upload_commits_after_our_check(cursor, **kwargs):
        statements = check_then_insert(cursor, **kwargs)
        meanwhile = sql.SQL(
            "; INSERT INTO reconciliation_record (tenant_id, job_id, side, external_id, amount, currency, booked_on,"
            " reference, counterparty, description, raw, created_at)"
            " VALUES ({tenant}, {job}, 'left', 'L2', 20, 'EUR', '2026-01-31', 'B', '', '', '{{}}', now())"
        ).format(tenant=sql.Literal(job.tenant_id), job=sql.Literal(job.pk))
        return dataclasses.replace(
            statements, find_rows_to_skip=sql.Composed([statements.find_rows_to_skip, meanwhile])
        )

    monkeypatch.setattr(ingest, "_stage_and_check", another_upload_commits_after_our_check)
    with pytest.raises(ConcurrentUpload):
        ingest_csv(job, text, side="left")
    monkeypatch.undo()

    # The simulated other upload rolled back with ours here; the retry goes through whole.
    retried = ingest_csv(job, text, side="left")
    assert (retried.inserted, retried.unchanged) == (1, 1)


def test_an_upload_of_new_good_rows_is_one_insert_without_the_full_check(monkeypatch):
    from reconciliation.ingest import records as ingest

    def full_check(*args, **kwargs):
        raise AssertionError("the full check ran")

    monkeypatch.setattr(ingest, "_check_then_insert", full_check)
    job = JobFactory()
    result = ingest_csv(job, f"{HEADER}\nL1,10,EUR,2026-01-31,A,,\nL2,20.5,EUR,2026-02-01,B,,\n", side="left")

    assert (result.received, result.inserted, result.unchanged, result.rejected) == (2, 2, 0, 0)
    assert sorted(Record.objects.filter(job=job).values_list("external_id", "amount")) == [
        ("L1", Decimal("10")),
        ("L2", Decimal("20.5")),
    ]


@pytest.mark.parametrize(
    "second_row",
    [
        "L1,10,EUR,2026-01-31,A,,",  # the same record twice in one upload
        "L2,abc,EUR,2026-01-31,B,,",  # a bad amount
        "L2,20,EUR,2026-02-30,B,,",  # no such day
    ],
)
def test_an_upload_the_one_insert_cannot_take_whole_is_refused_with_nothing_imported(second_row):
    job = JobFactory()
    with pytest.raises(InvalidUpload) as refused:
        ingest_csv(job, f"{HEADER}\nL1,10,EUR,2026-01-31,A,,\n{second_row}\n", side="left")

    assert refused.value.bad_rows == 1
    assert not Record.objects.filter(job=job).exists()


# Values at the edge of each rule. The one INSERT tests a row with cheaper SQL than the full
# check (records._ROW_FAST_OK): the two must agree on every value, or a bad row would slip in, or a
# good upload would pay for the full check.
AMOUNT_EDGES = [
    ("12345678901234.1234", True),  # 14 digits before the point, 4 after
    (" +7.5 ", True),
    ("-0", True),
    ("123456789012345", False),  # 15 digits before the point
    ("00000000000000001", False),  # 17 digits, even if the value fits
    ("1.12345", False),
    (".5", False),
    ("5.", False),
    ("--5", False),
    ("1.2.3", False),
    ("1e5", False),
    ("NaN", False),
    ("", False),
]
DATE_EDGES = [
    ("2024-02-29", True),
    (" 2026-12-31 ", True),
    ("0001-01-01", True),
    ("2026-02-29", False),  # not a leap year
    ("2026-04-31", False),
    ("2026-13-01", False),
    ("2026-00-10", False),
    ("0000-01-01", False),
    ("2026-1-01", False),
    ("20260-01-01", False),
    ("31/01/2026", False),
]


@pytest.mark.parametrize(
    ("amount", "booked_on", "accepted"),
    [(amount, "2026-01-31", accepted) for amount, accepted in AMOUNT_EDGES]
    + [("10.00", booked_on, accepted) for booked_on, accepted in DATE_EDGES],
)
def test_the_one_insert_and_the_full_check_agree_on_every_edge_value(monkeypatch, amount, booked_on, accepted):
    from reconciliation.ingest import records as ingest

    full_check_ran = []
    real_full_check = ingest._check_then_insert

    def spied_full_check(*args, **kwargs):
        full_check_ran.append(True)
        return real_full_check(*args, **kwargs)

    monkeypatch.setattr(ingest, "_check_then_insert", spied_full_check)
    job = JobFactory()
    text = f'{HEADER}\nL1,"{amount}",EUR,"{booked_on}",A,,\n'

    if accepted:
        assert ingest_csv(job, text, side="left").inserted == 1
        assert not full_check_ran
    else:
        with pytest.raises(InvalidUpload) as refused:
            ingest_csv(job, text, side="left")
        assert full_check_ran
        assert [problem.split(":")[0] for problem in refused.value.row_errors[0]["errors"]] == [
            "amount" if booked_on == "2026-01-31" else "booked_on"
        ]
        assert not Record.objects.filter(job=job).exists()


class _TerminatedMidCopy:
    """A CSV stream whose second read terminates the backend doing the COPY (a database restart)."""

    def __init__(self, text: str, backend_pid: int):
        self.stream = csv_stream_from_text(text)
        self.backend_pid = backend_pid
        self.reads = 0

    def readline(self, size=-1):
        return self.stream.readline(size)

    def read(self, size=-1):
        self.reads += 1
        if self.reads == 2:
            import psycopg
            from django.conf import settings

            db = settings.DATABASES["default"]
            with psycopg.connect(
                host=db["HOST"], port=db["PORT"] or None, user=db["USER"], dbname=db["NAME"], autocommit=True
            ) as other:
                other.execute("SELECT pg_terminate_backend(%s)", [self.backend_pid])
        return self.stream.read(size)


@pytest.mark.django_db(transaction=True)
def test_a_connection_terminated_mid_upload_is_a_database_error_not_an_invalid_upload():
    """A restart of PostgreSQL during COPY said 400 "the CSV cannot be read" (make chaos): a client
    would give up on a good file. It must surface as the database error it is (503 upstream)."""
    import psycopg
    from django.db import InterfaceError, OperationalError, connection

    job = JobFactory()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend_pid = cursor.fetchone()[0]
    rows = "".join(f"L{n},10,EUR,2026-01-31,R{n},,\n" for n in range(20_000))
    try:
        with pytest.raises((psycopg.OperationalError, OperationalError, InterfaceError)) as raised:
            records_ingest(job=job, csv_stream=_TerminatedMidCopy(f"{HEADER}\n{rows}", backend_pid), side="left")
        assert not isinstance(raised.value, InvalidUpload)
    finally:
        connection.close()  # the terminated connection; the next query opens a fresh one
    assert not Record.objects.filter(job=job).exists()


def test_an_upload_to_a_job_deleted_meanwhile_imports_nothing():
    # Records have no database foreign key to their job (its per-row check cost ~1.5 s per
    # million rows at COMMIT): the upload checks, and locks, the job row once instead.
    from reconciliation.models import ReconciliationJob

    job = JobFactory()
    ReconciliationJob.objects.filter(pk=job.pk).delete()

    with pytest.raises(InvalidUpload, match="does not exist"):
        ingest_csv(job, f"{HEADER}\nL1,10,EUR,2026-01-31,A,,\n", side="left")
    assert not Record.objects.filter(job_id=job.pk).exists()


def test_records_are_numbered_in_the_order_of_the_file():
    job = JobFactory()
    external_ids = [f"X{(n * 7919) % 1000:04d}" for n in range(300)]  # not sorted, all distinct
    rows = "".join(f"{external_id},{n}.5,EUR,2026-01-31,R{n},,\n" for n, external_id in enumerate(external_ids))

    ingest_csv(job, f"{HEADER}\n{rows}", side="left")

    assert list(Record.objects.filter(job=job).order_by("id").values_list("external_id", flat=True)) == external_ids
