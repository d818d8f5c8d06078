"""Loading records: a CSV of any size or a JSON array, streamed with COPY, checked in SQL, inserted once.

One path for both formats: rows are COPYed as text into a temporary staging table, one SQL
statement checks every row and writes each row's problems next to it, and one INSERT ... ON
CONFLICT DO NOTHING moves the good rows in. Nothing is parsed row by row in Python; a bad row
costs nothing more than a good one. Re-uploading a record that is already there (same job,
side and external_id, same values) changes nothing; the same external_id with different values is
an error, never a silent overwrite.
"""

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import psycopg
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from psycopg import sql

from project.activity import activity_record
from reconciliation import metrics
from reconciliation.errors import ConcurrentUpload, InvalidUpload
from reconciliation.models import ReconciliationJob
from reconciliation.workflow.signoff import upload_guard_finish, upload_guard_start

REQUIRED_COLUMNS = ("external_id", "amount", "currency", "booked_on")
OPTIONAL_COLUMNS = ("side", "reference", "counterparty", "description")
KNOWN_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
MAX_EXTRA_COLUMNS = 50
MAX_JSON_ROWS = 10_000
ERRORS_REPORTED = 100
COLUMN_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
COPY_CHUNK_BYTES = 1 << 20
# The header line names at most ~60 columns of at most 63 characters: 64 KiB is far more than a
# real header needs, and bounds what is read (and handed to the csv module) before COPY.
MAX_HEADER_BYTES = 64 * 1024
# PostgreSQL's system columns: a table cannot have a column of these names.
SYSTEM_COLUMNS = frozenset({"tableoid", "xmin", "cmin", "xmax", "cmax", "ctid"})


@dataclass
class IngestResult:
    received: int = 0
    inserted: int = 0
    unchanged: int = 0
    rejected: int = 0
    errors: list[dict] = field(default_factory=list)  # the first ERRORS_REPORTED: {row, errors}

    def as_dict(self) -> dict:
        return {
            "received": self.received,
            "inserted": self.inserted,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "errors": self.errors,
        }


# --- Reading the upload ------------------------------------------------------------------------


def _columns_from_header(header: list[str]) -> list[str]:
    columns = [name.strip().lower() for name in header]
    problems = []
    for name in columns:
        if not COLUMN_NAME.match(name):
            problems.append(f"column {name[:80]!r}: names are lower-case letters, digits and _")
        elif name in SYSTEM_COLUMNS:
            problems.append(f"column {name!r}: reserved by PostgreSQL, rename it")
    duplicated = sorted({name for name in columns if columns.count(name) > 1})
    if duplicated:
        problems.append(f"columns appear more than once: {', '.join(duplicated)}")
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        problems.append(f"missing required columns: {', '.join(missing)}")
    if len([name for name in columns if name not in KNOWN_COLUMNS]) > MAX_EXTRA_COLUMNS:
        problems.append(f"at most {MAX_EXTRA_COLUMNS} extra columns (kept in raw)")
    if problems:
        raise InvalidUpload("; ".join(problems))
    return columns


def _csv_chunks(stream) -> tuple[list[str], Iterator[bytes]]:
    """Split a binary CSV stream into its header (parsed) and the rest (raw bytes for COPY)."""
    if not hasattr(stream, "readline"):
        # DRF never hands an empty body to a parser: an empty text/csv upload arrives as {}.
        raise InvalidUpload("the CSV is empty; the first line must name the columns")
    first_line = stream.readline(MAX_HEADER_BYTES + 1)
    if not first_line.strip():
        raise InvalidUpload("the CSV is empty; the first line must name the columns")
    if len(first_line) > MAX_HEADER_BYTES:
        raise InvalidUpload(f"the header line is longer than {MAX_HEADER_BYTES} bytes")
    try:
        header_text = first_line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidUpload("the CSV must be UTF-8") from None
    try:
        header = next(csv.reader([header_text]))
    except csv.Error as error:
        raise InvalidUpload(f"the header line cannot be read: {error}") from None

    def rest() -> Iterator[bytes]:
        while chunk := stream.read(COPY_CHUNK_BYTES):
            yield chunk

    return header, rest()


def _json_rows(rows) -> tuple[list[str], list[list[str | None]]]:
    if not isinstance(rows, list):
        raise InvalidUpload("the body must be a JSON array of records (or upload a CSV)")
    if len(rows) > MAX_JSON_ROWS:
        raise InvalidUpload(f"at most {MAX_JSON_ROWS} records per JSON upload; send a CSV for more")
    columns: list[str] = []
    seen = set()
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise InvalidUpload(f"row {number}: each record must be a JSON object")
        for key in row:
            if key not in seen:
                seen.add(key)
                columns.append(key)
    for name in REQUIRED_COLUMNS:
        if name not in seen:
            columns.append(name)  # every row then reports it missing, with its row number
    columns = _columns_from_header(columns)

    def text(value) -> str | None:
        if value is None:
            return None
        if isinstance(value, (dict, list)):
            return json.dumps(value)  # kept as text; a nested amount or date fails its check
        if isinstance(value, bool):
            return str(value).lower()
        return str(value)

    return columns, [[text(row.get(name)) for name in columns] for row in rows]


# --- Checking and inserting in SQL -------------------------------------------------------------

# Values are trimmed text. PostgreSQL's regular expressions cost most of a check: a bounded
# repeat ({1,14}) is unrolled into the automaton, so an amount's shape is one unbounded pattern and
# its digits are counted apart (a count(*) over 1M staged rows: 1.45 s -> 0.7 s; the whole fast
# path: bench/recon_ingest_ab.py).
AMOUNT_SHAPE_PATTERN = r"^[+-]?[0-9]+(\.[0-9]+)?$"
AMOUNT_INTEGER_DIGITS = 14
AMOUNT_DECIMALS = 4
CURRENCY_PATTERN = r"^[A-Z]{3}$"
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"

# A decimal number with at most 14 digits before the point and 4 after it.
_AMOUNT_OK = """
    (btrim(s.amount) ~ {amount_shape_re}
     AND length(ltrim(split_part(btrim(s.amount), '.', 1), '+-')) <= {amount_integer_digits}
     AND length(split_part(btrim(s.amount), '.', 2)) <= {amount_decimals})
"""

# A real calendar date, checked without raising (pg_input_is_valid needs PostgreSQL 16): CASE
# guarantees the order, so make_date only ever sees a valid year and month.
_DATE_OK = """
    CASE WHEN s.booked_on IS NULL OR btrim(s.booked_on) !~ {date_re} THEN false
         WHEN substr(btrim(s.booked_on), 1, 4)::int < 1 OR substr(btrim(s.booked_on), 6, 2)::int NOT BETWEEN 1 AND 12
         THEN false
         ELSE substr(btrim(s.booked_on), 9, 2)::int BETWEEN 1 AND extract(day FROM
              make_date(substr(btrim(s.booked_on), 1, 4)::int, substr(btrim(s.booked_on), 6, 2)::int, 1)
              + interval '1 month' - interval '1 day')::int
    END
"""

# Each CASE yields one problem or NULL: the checks of a row alone, then the two that compare it
# with other rows (a duplicate in the upload, a record already imported with other values).
_ROW_CHECKS = """
        CASE WHEN s.external_id IS NULL OR btrim(s.external_id) = '' THEN 'external_id: required'
             WHEN length(btrim(s.external_id)) > 128 THEN 'external_id: longer than 128 characters' END,
        CASE WHEN s.amount IS NULL OR btrim(s.amount) = '' THEN 'amount: required'
             WHEN NOT {amount_ok}
             THEN 'amount: must be a decimal number with at most 14 digits before and 4 after the point' END,
        CASE WHEN s.currency IS NULL OR upper(btrim(s.currency)) !~ {currency_re}
             THEN 'currency: must be a 3-letter ISO 4217 code' END,
        CASE WHEN NOT {date_ok} THEN 'booked_on: must be a date written ' || {date_written} END,
        CASE WHEN {side} IS NULL OR {side} NOT IN ('left', 'right')
             THEN 'side: must be left or right (a side column, or ?side=)' END,
        CASE WHEN length({reference}) > 128 THEN 'reference: longer than 128 characters' END,
        CASE WHEN length({counterparty}) > 255 THEN 'counterparty: longer than 255 characters' END
"""
_CROSS_ROW_CHECKS = """
        CASE WHEN s._row_no <> s._first_row_no
             THEN 'external_id: also on row ' || s._first_row_no || ' of this upload' END,
        CASE WHEN existing.id IS NOT NULL AND (
                  existing.amount IS DISTINCT FROM
                      (CASE WHEN {amount_ok} THEN btrim(s.amount)::numeric END)
                  OR existing.currency IS DISTINCT FROM upper(btrim(s.currency))
                  OR existing.booked_on::text IS DISTINCT FROM btrim(s.booked_on)
                  OR existing.reference IS DISTINCT FROM {reference})
             THEN 'external_id: already imported with different values (record ' || existing.id || ')' END
"""
# array_remove keeps the problems.
_ROW_PROBLEMS = "array_remove(ARRAY[" + _ROW_CHECKS + "," + _CROSS_ROW_CHECKS + "], NULL)"
# The fast path's test of a row alone: what _ROW_CHECKS accepts, as one AND that stops at the
# first false (a NULL value makes it NULL: the row is left out too), without building the array of
# problems. A date is only checked for its shape: one of the right shape that is no day
# (2026-02-30) makes the INSERT's ::date cast raise, and the full check then names it. _DATE_OK's
# calendar arithmetic cost 3.7 s per 1M rows; the cast costs 0.4 s.
_ROW_FAST_OK = """
        btrim(s.external_id) <> '' AND length(btrim(s.external_id)) <= 128
        AND {amount_ok}
        AND upper(btrim(s.currency)) ~ {currency_re}
        AND btrim(s.booked_on) ~ {date_re}
        AND {side} IN ('left', 'right')
        AND length({reference}) <= 128 AND length({counterparty}) <= 255
"""


def _optional(columns: list[str], name: str) -> sql.Composable:
    if name in columns:
        return sql.SQL("coalesce(btrim(s.{}), '')").format(sql.Identifier(name))
    return sql.Literal("")


def _side(columns: list[str], default_side: str | None) -> sql.Composable:
    """A row's side: its own `side` column, else the upload's ?side=, else NULL (a bad row)."""
    if "side" in columns and default_side:
        return sql.SQL("coalesce(nullif(lower(btrim(s.side)), ''), {})").format(sql.Literal(default_side))
    if "side" in columns:
        return sql.SQL("lower(btrim(s.side))")
    return sql.Literal(default_side) if default_side else sql.SQL("NULL::text")


def _raw(columns: list[str]) -> sql.Composable:
    """The columns the records table has no place for, kept as JSON."""
    extras = [name for name in columns if name not in KNOWN_COLUMNS]
    if not extras:
        return sql.SQL("'{}'::jsonb")
    return sql.SQL("jsonb_build_object({})").format(
        sql.SQL(", ").join(sql.SQL("{}, s.{}").format(sql.Literal(name), sql.Identifier(name)) for name in extras)
    )


def _stage_and_check(cursor, *, job: ReconciliationJob, columns: list[str], default_side: str | None):
    """Create the staging table (dropped at commit); return the statements that find the bad rows and
    insert the good ones.

    The staging table's own columns start with "_", which no upload column can (COLUMN_NAME): a
    user's `row_no` or `first_row_no` column is just another extra, kept in raw."""
    # ON COMMIT DROP cleans up after the usual call; an earlier upload in the same outer
    # transaction (a caller's atomic block) may have left them.
    cursor.execute("DROP TABLE IF EXISTS recon_staging, recon_skip")
    # The duplicate check and the insert sort the whole upload: in memory, not in temp files
    # (100k rows, shared machine: 2.80 s -> 2.56 s mean of 3). SET LOCAL: this upload only.
    cursor.execute("SELECT set_config('work_mem', %s, true)", [settings.RECONCILIATION_INGEST_WORK_MEM])
    cursor.execute(
        sql.SQL(
            "CREATE TEMP TABLE recon_staging (_row_no bigint GENERATED ALWAYS AS IDENTITY, {}) ON COMMIT DROP"
        ).format(sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(name)) for name in columns))
    )
    return check_and_insert_statements(job=job, columns=columns, default_side=default_side)


# The checks of a value's shape, the same for every upload.
_VALUE_CHECKS = {
    "amount_ok": sql.SQL(_AMOUNT_OK).format(
        amount_shape_re=sql.Literal(AMOUNT_SHAPE_PATTERN),
        amount_integer_digits=sql.Literal(AMOUNT_INTEGER_DIGITS),
        amount_decimals=sql.Literal(AMOUNT_DECIMALS),
    ),
    "currency_re": sql.Literal(CURRENCY_PATTERN),
    "date_re": sql.Literal(DATE_PATTERN),
    "date_ok": sql.SQL(_DATE_OK).format(date_re=sql.Literal(DATE_PATTERN)),
}


@dataclass(frozen=True)
class IngestStatements:
    """The SQL of one upload over `recon_staging`: see check_and_insert."""

    insert_if_clean: sql.Composable  # every row, when none has a problem of its own
    find_rows_to_skip: sql.Composable  # the full check: bad rows, duplicates, records already there
    insert_good_rows: sql.Composable  # the rows the full check let through


def check_and_insert_statements(
    *,
    job: ReconciliationJob,
    columns: list[str],
    default_side: str | None,
    raw: sql.Composable | None = None,
    date_written: str = "YYYY-MM-DD",
) -> IngestStatements:
    """The statements that check the rows of `recon_staging` (the upload's own columns, or a
    source profile's mapping of them) and insert the good ones. `raw` overrides the jsonb of the
    extra columns; `date_written` is the date format booked_on's error names."""
    side = _side(columns, default_side)
    reference = _optional(columns, "reference")
    checks = {
        "side": side,
        "reference": reference,
        "counterparty": _optional(columns, "counterparty"),
        **_VALUE_CHECKS,
        "date_written": sql.Literal(date_written),
    }

    def insert(rows: sql.Composable, order: sql.Composable) -> sql.Composed:
        """The INSERT of the staging rows that satisfy `rows`, in the upload's order (ids, and
        created_at's BRIN, follow the file)."""
        return sql.SQL(
            """
            INSERT INTO reconciliation_record
                (tenant_id, job_id, side, external_id, amount, currency, booked_on,
                 reference, counterparty, description, raw, created_at)
            SELECT {tenant_id}, {job_id}, {side}, btrim(s.external_id), btrim(s.amount)::numeric,
                   upper(btrim(s.currency)), btrim(s.booked_on)::date, {reference}, {counterparty}, {description},
                   jsonb_strip_nulls({raw}), now()
            FROM recon_staging s
            WHERE {rows}
            {order}
            """
        ).format(
            tenant_id=sql.Literal(job.tenant_id),
            job_id=sql.Literal(job.pk),
            side=side,
            reference=reference,
            counterparty=checks["counterparty"],
            description=_optional(columns, "description"),
            raw=raw or _raw(columns),
            rows=rows,
            order=order,
        )

    # The full check writes down only the rows not to insert (bad ones, and those already there:
    # usually none), so the good rows go from staging to the records table once, without ON
    # CONFLICT's second probe of the unique index.
    find_rows_to_skip = sql.SQL(
        """
        CREATE TEMP TABLE recon_skip ON COMMIT DROP AS
        SELECT row_no, problems FROM (
            SELECT s._row_no AS row_no, {problems} AS problems, existing.id AS existing_id
            FROM (
                SELECT s.*, min(s._row_no) OVER (PARTITION BY {side}, btrim(s.external_id)) AS _first_row_no
                FROM recon_staging s
            ) s
            LEFT JOIN reconciliation_record existing
                   ON existing.job_id = {job_id} AND existing.side = {side}
                  AND existing.external_id = btrim(s.external_id)
        ) checked
        WHERE cardinality(problems) > 0 OR existing_id IS NOT NULL
        """
    ).format(side=side, problems=sql.SQL(_ROW_PROBLEMS).format(**checks), job_id=sql.Literal(job.pk))
    return IngestStatements(
        # A filter on the one scan of a temp table (no index, never parallel): rows come in the
        # order COPY wrote them, without a sort of the whole upload (1M rows: ~1.3 s, on disk).
        insert_if_clean=insert(sql.SQL(_ROW_FAST_OK).format(**checks), sql.SQL("")),
        find_rows_to_skip=find_rows_to_skip,
        insert_good_rows=insert(
            sql.SQL("NOT EXISTS (SELECT 1 FROM recon_skip b WHERE b.row_no = s._row_no)"),
            sql.SQL("ORDER BY s._row_no"),  # an anti-join, which may hash: the order is asked for
        ),
    )


def records_ingest(
    *,
    job: ReconciliationJob,
    csv_stream=None,
    json_rows=None,
    side: str | None = None,
    on_error: str = "reject",
    user=None,
) -> IngestResult:
    """Load records into `job` from a binary CSV stream or a parsed JSON array.

    on_error="reject" (default): any bad row fails the whole upload with InvalidUpload listing the
    first 100 problems, and nothing is imported. on_error="skip": the good rows are imported and
    the bad ones reported.
    """
    if on_error not in ("reject", "skip"):
        raise InvalidUpload("on_error must be reject or skip")
    if side is not None and side not in ("left", "right"):
        raise InvalidUpload("side must be left or right")
    if (csv_stream is None) == (json_rows is None):
        raise InvalidUpload("send either a CSV or a JSON array")

    if csv_stream is not None:
        header, chunks = _csv_chunks(csv_stream)
        columns = _columns_from_header(header)
        rows: Iterable | None = None
    else:
        columns, rows = _json_rows(json_rows)
        chunks = None

    result = IngestResult()
    with transaction.atomic(), connection.cursor() as django_cursor:
        cursor = django_cursor.cursor  # psycopg's own cursor: COPY and sql.Composed
        statements = _stage_and_check(cursor, job=job, columns=columns, default_side=side)
        _copy_into_staging(cursor, columns, chunks=chunks, rows=rows)
        check_and_insert(cursor, job=job, statements=statements, on_error=on_error, user=user, result=result)
    metrics.records_ingested_total.inc(result.inserted)
    return result


class _NotClean(Exception):
    """The fast path met a row it cannot insert as it is: the full check decides."""


def check_and_insert(cursor, *, job, statements: IngestStatements, on_error: str, user, result: IngestResult) -> None:
    """Insert the upload: first every row at once, if none has a problem of its own and none is
    there already (the usual upload of new records: one pass over the staging table); else, the
    first attempt undone, the full check finds the rows to refuse (on_error=reject) or skip, and
    the rest is inserted."""
    cursor.execute("SELECT count(*) FROM recon_staging")
    result.received = cursor.fetchone()[0]
    # What the job foreign key checked per row (models.Record.job), once: the job is there, and
    # stays until this upload commits. A KEY SHARE lock: the other side's upload takes it too.
    cursor.execute("SELECT 1 FROM reconciliation_reconciliationjob WHERE id = %s FOR KEY SHARE", [job.pk])
    if cursor.fetchone() is None:
        raise InvalidUpload(f"job {job.pk} does not exist")
    guard = upload_guard_start(job_id=job.pk)
    try:
        with transaction.atomic():
            cursor.execute(statements.insert_if_clean)
            if cursor.rowcount != result.received:
                raise _NotClean  # a row with a problem: undone (the savepoint), the full check reports it
    except (_NotClean, IntegrityError, psycopg.errors.UniqueViolation, psycopg.DataError):
        # A duplicate external_id (in the upload, or already imported, perhaps unchanged) or a
        # bad row: the unique index, a cast (a date of the right shape that is no day) or the
        # count found it, the full check says which.
        _check_then_insert(cursor, statements=statements, on_error=on_error, result=result)
    else:
        result.inserted = cursor.rowcount
    upload_guard_finish(job_id=job.pk, before_id=guard)  # signed-off periods are read-only (workflow)
    activity_record(
        category="reconciliation",
        action="records_ingest",
        user=user,
        entity_type="reconciliation.job",
        entity_id=job.pk,
        metadata={k: v for k, v in result.as_dict().items() if k != "errors"} | {"on_error": on_error},
        tenant_id=job.tenant_id,
    )


def _check_then_insert(cursor, *, statements: IngestStatements, on_error: str, result: IngestResult) -> None:
    """Find the rows to skip, refuse the upload (on_error=reject) or skip them, insert the rest."""
    cursor.execute(statements.find_rows_to_skip)
    cursor.execute(
        """SELECT (SELECT count(*) FILTER (WHERE cardinality(problems) > 0) FROM recon_skip),
                  (SELECT count(*) FILTER (WHERE cardinality(problems) = 0) FROM recon_skip)"""
    )
    result.rejected, result.unchanged = cursor.fetchone()
    if result.rejected:
        cursor.execute(
            "SELECT row_no, problems FROM recon_skip WHERE cardinality(problems) > 0 ORDER BY row_no LIMIT %s",
            [ERRORS_REPORTED],
        )
        result.errors = [{"row": row_no, "errors": problems} for row_no, problems in cursor.fetchall()]
        if on_error == "reject":
            raise InvalidUpload(
                f"{result.rejected} of {result.received} rows are invalid; nothing was imported",
                row_errors=result.errors,
                bad_rows=result.rejected,
            )
    try:
        with transaction.atomic():
            cursor.execute(statements.insert_good_rows)
    except (IntegrityError, psycopg.errors.UniqueViolation):
        # Another upload inserted some of these records after our check: retrying finds
        # them there (unchanged), so the client is told to retry.
        raise ConcurrentUpload() from None
    result.inserted = cursor.rowcount


def _copy_into_staging(cursor, columns: list[str], *, chunks: Iterator[bytes] | None, rows: Iterable | None) -> None:
    # CSV bytes go through as they came; JSON rows are written by psycopg in COPY's text format.
    copy_sql = sql.SQL("COPY recon_staging ({}) FROM STDIN WITH (FORMAT {})").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.SQL("csv" if chunks is not None else "text")
    )
    try:
        with cursor.copy(copy_sql) as copy:
            if chunks is not None:
                for chunk in chunks:
                    copy.write(chunk)
            else:
                for row in rows:
                    copy.write_row(row)
    except Exception as error:  # psycopg reports CSV it cannot read (bad quoting, column count)
        if not _is_data_error(error):
            raise
        raise InvalidUpload(f"the CSV cannot be read: {_first_line(error)}") from None


def _is_data_error(error: Exception) -> bool:
    if _is_connection_lost(error):
        return False
    return isinstance(error, (psycopg.errors.DataError, psycopg.errors.BadCopyFileFormat)) or (
        "COPY" in str(error) and isinstance(error, psycopg.Error)
    )


def _is_connection_lost(error: Exception) -> bool:
    """The server went away mid-COPY (a restart: 57P01-03, a broken link: 08xxx or no SQLSTATE).
    Its message names COPY too, but it is the database's failure, not the file's: a 400 "the CSV
    cannot be read" would make a client give up on a good file."""
    if isinstance(error, psycopg.InterfaceError):
        return True
    if not isinstance(error, psycopg.OperationalError):
        return False
    sqlstate = error.sqlstate or ""
    return not sqlstate or sqlstate.startswith(("57P", "08"))


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else error.__class__.__name__


def csv_stream_from_text(text: str) -> io.BytesIO:
    """A binary stream over CSV text (tests, the admin's small uploads)."""
    return io.BytesIO(text.encode())
