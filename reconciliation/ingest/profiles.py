"""Source profiles: a CSV in its source's own shape (column names, dates, decimals, signs,
encoding) loaded through the same COPY fast path as a plain CSV.

The file is COPYed untouched into a staging table whose columns are the file's own (c1..cN,
PostgreSQL converting Windows-1252 to UTF-8 on the way); one CREATE TABLE ... AS SELECT, the
profile's mapping written as one SQL expression per record field, makes the ingest's usual
staging table; its usual check and insert follow. No row passes through Python.
"""

import csv
import re

from django.db import IntegrityError, connection, transaction
from psycopg import sql

from project.activity import activity_record
from reconciliation import metrics
from reconciliation.errors import InvalidProfile, InvalidUpload
from reconciliation.ingest.records import (
    COPY_CHUNK_BYTES,
    MAX_EXTRA_COLUMNS,
    MAX_HEADER_BYTES,
    IngestResult,
    _first_line,
    _is_data_error,
    check_and_insert,
    check_and_insert_statements,
)
from reconciliation.models import ReconciliationJob, SourceProfile, Tenant

# Record fields a profile maps a file column onto. `debit` and `credit` together replace
# `amount` (a debit becomes negative); `value_date` is kept in raw.
REQUIRED_FIELDS = ("external_id", "booked_on")
MAPPED_FIELDS = (
    "external_id",
    "amount",
    "debit",
    "credit",
    "currency",
    "booked_on",
    "value_date",
    "reference",
    "counterparty",
    "description",
    "side",
)
DATE_TOKENS = ("YYYY", "YY", "MM", "DD")
DATE_FORMAT = re.compile(r"^(YYYY|YY|MM|DD|[./ -])+$")
DECIMAL_SEPARATORS = (".", ",")
THOUSANDS_SEPARATORS = ("", ",", ".", " ", "'")
DELIMITERS = (",", ";", "\t", "|")
POSTGRES_ENCODINGS = {SourceProfile.Encoding.UTF8: "UTF8", SourceProfile.Encoding.WINDOWS_1252: "WIN1252"}
PYTHON_ENCODINGS = {SourceProfile.Encoding.UTF8: "utf-8-sig", SourceProfile.Encoding.WINDOWS_1252: "cp1252"}
CATEGORY = "reconciliation"


# --- The profile itself ------------------------------------------------------------------------


def profile_problems(values: dict) -> dict[str, str]:
    """What is wrong with a profile's settings, by field (empty when it can be used)."""
    problems: dict[str, str] = {}
    columns = values.get("columns")
    if not isinstance(columns, dict):
        return {"columns": "an object {record field: the file's column name}"}
    unknown = sorted(set(columns) - set(MAPPED_FIELDS))
    if unknown:
        problems["columns"] = f"unknown fields {', '.join(unknown)}; known: {', '.join(MAPPED_FIELDS)}"
    elif any(not isinstance(name, str) or not name.strip() or len(name) > 200 for name in columns.values()):
        problems["columns"] = "each column name is a non-empty string of at most 200 characters"
    elif missing := [name for name in REQUIRED_FIELDS if name not in columns]:
        problems["columns"] = f"missing {', '.join(missing)}"
    elif ("amount" in columns) == ("debit" in columns or "credit" in columns):
        problems["columns"] = "map either amount (signed) or both debit and credit"
    elif ("debit" in columns) != ("credit" in columns):
        problems["columns"] = "debit and credit come together"
    elif len({name.strip().lower() for name in columns.values()}) < len(columns):
        problems["columns"] = "two fields map the same column"
    elif "currency" not in columns and not values.get("default_currency"):
        problems["columns"] = "map currency or set default_currency"
    date_format = values.get("date_format", "YYYY-MM-DD")
    if not DATE_FORMAT.match(date_format or "") or [t for t in ("MM", "DD") if date_format.count(t) != 1]:
        problems["date_format"] = "DD, MM and YYYY (or YY) once each, with . / - or space between: DD.MM.YYYY"
    elif "YYYY" not in date_format and date_format.count("YY") != 1:
        problems["date_format"] = "the year once: YYYY or YY"
    if values.get("decimal_separator", ".") not in DECIMAL_SEPARATORS:
        problems["decimal_separator"] = "one of . ,"
    if values.get("thousands_separator", "") not in THOUSANDS_SEPARATORS:
        problems["thousands_separator"] = "empty or one of , . space '"
    elif values.get("thousands_separator", "") == values.get("decimal_separator", "."):
        problems["thousands_separator"] = "must differ from the decimal separator"
    if values.get("delimiter", ",") not in DELIMITERS:
        problems["delimiter"] = "one of , ; tab |"
    currency = values.get("default_currency", "")
    if currency and not re.fullmatch(r"[A-Z]{3}", currency):
        problems["default_currency"] = "a 3-letter ISO 4217 code in capitals"
    return problems


@transaction.atomic
def source_profile_create(*, tenant: Tenant, name: str, user=None, **settings) -> SourceProfile:
    problems = profile_problems(settings)
    if problems:
        raise InvalidProfile(problems)
    try:
        with transaction.atomic():
            profile = SourceProfile.objects.create(tenant=tenant, name=name, **settings)
    except IntegrityError:
        raise InvalidProfile({"name": f"this tenant already has a profile named {name!r}"}) from None
    _audit("source_profile_create", profile, user, {"name": name})
    return profile


@transaction.atomic
def source_profile_update(*, profile: SourceProfile, user=None, **changes) -> SourceProfile:
    current = {field: getattr(profile, field) for field in SETTINGS_FIELDS}
    problems = profile_problems(current | changes)
    if problems:
        raise InvalidProfile(problems)
    for field, value in changes.items():
        setattr(profile, field, value)
    try:
        with transaction.atomic():
            profile.save()
    except IntegrityError:
        raise InvalidProfile({"name": f"this tenant already has a profile named {profile.name!r}"}) from None
    _audit("source_profile_update", profile, user, {"fields": sorted(changes)})
    return profile


@transaction.atomic
def source_profile_delete(*, profile: SourceProfile, user=None) -> None:
    _audit("source_profile_delete", profile, user, {"name": profile.name})
    profile.delete()


SETTINGS_FIELDS = (
    "columns",
    "date_format",
    "decimal_separator",
    "thousands_separator",
    "delimiter",
    "encoding",
    "default_currency",
)


def _audit(action: str, profile: SourceProfile, user, metadata: dict) -> None:
    activity_record(
        category=CATEGORY,
        action=action,
        user=user,
        entity_type="reconciliation.source_profile",
        entity_id=profile.pk,
        metadata=metadata | {"tenant_id": profile.tenant_id},
        tenant_id=profile.tenant_id,
    )


def source_profile_list(*, tenant_ids: list[int]):
    return SourceProfile.objects.filter(tenant_id__in=tenant_ids)


def source_profile_for_upload(*, job: ReconciliationJob, profile_id: str) -> SourceProfile:
    """An upload's ?profile=: one of the job's tenant's profiles (another tenant's is not there)."""
    profile = None
    if profile_id.isascii() and profile_id.isdigit() and len(profile_id) <= 18:
        profile = SourceProfile.objects.filter(pk=int(profile_id), tenant_id=job.tenant_id).first()
    if profile is None:
        raise InvalidUpload(f"profile: no source profile {profile_id[:40]!r} in this job's tenant")
    return profile


# --- The mapping, in SQL -----------------------------------------------------------------------


def _date_sql(value: sql.Composable, date_format: str) -> sql.Composable:
    """The date rewritten as YYYY-MM-DD when it has the profile's shape; refused otherwise (the
    ingest's check then names the format it was expected in). Every token has a fixed width, so
    the parts are cut by position once the shape is checked."""
    if date_format == "YYYY-MM-DD":
        return value
    pattern, start, position = "", {}, 1
    for token in re.findall(r"YYYY|YY|MM|DD|.", date_format):
        if token in DATE_TOKENS:
            start[token] = (position, len(token))
            pattern += f"[0-9]{{{len(token)}}}"
        else:
            pattern += re.escape(token)
        position += len(token)
    value = sql.SQL("nullif(btrim({}), '')").format(value)  # an empty cell is no date, not a bad one

    def part(token: str) -> sql.Composable:
        return sql.SQL("substr({}, {}, {})").format(value, sql.Literal(start[token][0]), sql.Literal(start[token][1]))

    year = part("YYYY") if "YYYY" in start else sql.SQL("'20' || {}").format(part("YY"))
    # A value in another shape (even YYYY-MM-DD) is refused: "#" keeps it from passing the check.
    return sql.SQL("CASE WHEN {v} ~ {p} THEN {y} || '-' || {m} || '-' || {d} ELSE '#' || {v} END").format(
        v=value, p=sql.Literal(f"^{pattern}$"), y=year, m=part("MM"), d=part("DD")
    )


def _number_sql(value: sql.Composable, profile: SourceProfile) -> sql.Composable:
    """1.234,56 → 1234.56: thousands separators dropped, the decimal separator made a point."""
    expression = sql.SQL("btrim({})").format(value)
    if profile.thousands_separator:
        expression = sql.SQL("replace({}, {}, '')").format(expression, sql.Literal(profile.thousands_separator))
    if profile.decimal_separator != ".":
        expression = sql.SQL("replace({}, {}, '.')").format(expression, sql.Literal(profile.decimal_separator))
    return expression


ZERO_PATTERN = r"^[+-]?0*([.]0*)?$"


def _amount_sql(profile: SourceProfile, column) -> sql.Composable:
    if "amount" in profile.columns:
        return _number_sql(column("amount"), profile)
    credit, debit = _number_sql(column("credit"), profile), _number_sql(column("debit"), profile)
    # A zero or empty cell is "not this column" (exports often write 0,00 in the other one).
    return sql.SQL(
        """CASE WHEN coalesce({credit}, '') !~ {zero} AND coalesce({debit}, '') !~ {zero}
                THEN 'a debit and a credit on one row'
                WHEN coalesce({credit}, '') !~ {zero} THEN {credit}
                WHEN coalesce({debit}, '') !~ {zero} THEN '-' || ltrim({debit}, '+-')
                ELSE nullif(coalesce({credit}, {debit}), '') END"""
    ).format(credit=credit, debit=debit, zero=sql.Literal(ZERO_PATTERN))


def _mapping(profile: SourceProfile, header: list[str]) -> tuple[sql.Composed, list]:
    """The statement that maps the staged file onto the ingest's columns, and those columns."""
    position = {name.strip().lower(): index for index, name in enumerate(header, start=1)}
    missing = [f"{field} ({name!r})" for field, name in profile.columns.items() if name.strip().lower() not in position]
    if missing:
        raise InvalidUpload(
            f"profile {profile.name!r}: the file has no column for {', '.join(missing)}; "
            f"its columns are {', '.join(repr(name) for name in header[:60])}"
        )

    def column(field: str) -> sql.Composable:
        return sql.Identifier(f"c{position[profile.columns[field].strip().lower()]}")

    mapped = {
        "external_id": column("external_id"),
        "amount": _amount_sql(profile, column),
        "currency": column("currency") if "currency" in profile.columns else sql.Literal(profile.default_currency),
        "booked_on": _date_sql(column("booked_on"), profile.date_format),
    }
    for field in ("reference", "counterparty", "description", "side"):
        if field in profile.columns:
            mapped[field] = column(field)
    used = {position[name.strip().lower()] for name in profile.columns.values()}
    extras = [(name, index) for index, name in enumerate(header, start=1) if index not in used]
    if len(extras) > MAX_EXTRA_COLUMNS:
        raise InvalidUpload(f"at most {MAX_EXTRA_COLUMNS} unmapped columns (kept in raw)")
    raw_pairs = [sql.SQL("{}, {}").format(sql.Literal(name), sql.Identifier(f"c{index}")) for name, index in extras]
    if "value_date" in profile.columns:
        raw_pairs.append(sql.SQL("'value_date', {}").format(_date_sql(column("value_date"), profile.date_format)))
    raw = sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(raw_pairs)) if raw_pairs else sql.SQL("'{}'")
    # Each expression evaluated once per row, into the table the ingest's checks read: a view
    # would evaluate a column's expression again at every mention (booked_on: eight in the check).
    mapping = sql.SQL(
        "CREATE TEMP TABLE recon_staging ON COMMIT DROP AS SELECT _row_no, {}, {}::jsonb AS _raw FROM recon_raw"
    ).format(
        sql.SQL(", ").join(sql.SQL("{} AS {}").format(value, sql.Identifier(field)) for field, value in mapped.items()),
        raw,
    )
    return mapping, list(mapped)


# --- Loading -----------------------------------------------------------------------------------


def _header_of(stream, profile: SourceProfile) -> list[str]:
    if not hasattr(stream, "readline"):
        raise InvalidUpload("the CSV is empty; the first line must name the columns")
    first_line = stream.readline(MAX_HEADER_BYTES + 1)
    if not first_line.strip():
        raise InvalidUpload("the CSV is empty; the first line must name the columns")
    if len(first_line) > MAX_HEADER_BYTES:
        raise InvalidUpload(f"the header line is longer than {MAX_HEADER_BYTES} bytes")
    try:
        text = first_line.decode(PYTHON_ENCODINGS[profile.encoding])
    except UnicodeDecodeError:
        raise InvalidUpload(f"profile {profile.name!r}: the header line is not {profile.encoding}") from None
    if "\x00" in text:  # PostgreSQL text cannot hold NUL, and unmapped names become raw's keys
        raise InvalidUpload("the header line contains a NUL character")
    try:
        return next(csv.reader([text.rstrip("\r\n")], delimiter=profile.delimiter))
    except (csv.Error, StopIteration) as error:
        raise InvalidUpload(f"the header line cannot be read: {error}") from None


def records_ingest_with_profile(
    *,
    job: ReconciliationJob,
    profile: SourceProfile,
    csv_stream,
    side: str | None = None,
    on_error: str = "reject",
    user=None,
) -> IngestResult:
    """Load a CSV in `profile`'s shape into `job`; the same all-or-nothing and idempotence as
    `records_ingest`."""
    if on_error not in ("reject", "skip"):
        raise InvalidUpload("on_error must be reject or skip")
    if side is not None and side not in ("left", "right"):
        raise InvalidUpload("side must be left or right")
    header = _header_of(csv_stream, profile)
    mapping, columns = _mapping(profile, header)
    raw_columns = [f"c{index}" for index in range(1, len(header) + 1)]
    result = IngestResult()
    with transaction.atomic(), connection.cursor() as django_cursor:
        cursor = django_cursor.cursor
        # An earlier upload in the same outer transaction may have left them (ON COMMIT DROP).
        cursor.execute("DROP TABLE IF EXISTS recon_staging, recon_raw, recon_skip")
        raw_table = sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(name)) for name in raw_columns)
        cursor.execute(
            sql.SQL(
                "CREATE TEMP TABLE recon_raw (_row_no bigint GENERATED ALWAYS AS IDENTITY, {}) ON COMMIT DROP"
            ).format(raw_table)
        )
        copy_sql = sql.SQL("COPY recon_raw ({}) FROM STDIN WITH (FORMAT csv, DELIMITER {}, ENCODING {})").format(
            sql.SQL(", ").join(map(sql.Identifier, raw_columns)),
            sql.Literal(profile.delimiter),
            sql.Literal(POSTGRES_ENCODINGS[profile.encoding]),
        )
        try:
            with cursor.copy(copy_sql) as copy:
                while chunk := csv_stream.read(COPY_CHUNK_BYTES):
                    copy.write(chunk)
        except Exception as error:  # bad quoting, column count, bytes not in the encoding
            if not _is_data_error(error):
                raise
            raise InvalidUpload(f"the CSV cannot be read: {_first_line(error)}") from None
        cursor.execute(mapping)
        statements = check_and_insert_statements(
            job=job,
            columns=columns,
            default_side=side,
            raw=sql.SQL("s._raw"),
            date_written=profile.date_format,
        )
        check_and_insert(cursor, job=job, statements=statements, on_error=on_error, user=user, result=result)
    metrics.records_ingested_total.inc(result.inserted)
    return result
