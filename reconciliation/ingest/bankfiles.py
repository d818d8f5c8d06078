"""Bank statements (CAMT.053/.052, MT940, BAI2, OFX) read by maintained parsers, mapped to records.

Each parser turns a file into its own objects; here they become `BankEntry`s with the record's
fields: external_id from the bank's own entry reference, the amount signed by the credit/debit
mark (credits positive), currency, booking date, value date, reference (remittance information)
and counterparty. The entries then go through the CSV ingest (COPY, checks in SQL, one insert),
so a statement is all or nothing like any upload, and re-sending it changes nothing.

Statements are small (a day or a month of one account): a file is read whole, capped by
RECONCILIATION_STATEMENT_MAX_BYTES. A file that cannot be read is an `InvalidUpload` naming the
entry (its number in the file, and its bank reference when it has one) and the problem.
"""

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation

import bai2.exceptions
import mt940
import ofxparse
from bai2 import bai2 as bai2_reader
from lxml import etree
from pycamt.parser import Camt053ParseError, Camt053Parser

from reconciliation.errors import InvalidUpload
from reconciliation.ingest.records import IngestResult, records_ingest
from reconciliation.models import ReconciliationJob

FORMATS = ("camt", "mt940", "bai2", "ofx")
# BAI2 amounts are whole minor units; currencies without two decimals (ISO 4217 exponents).
MINOR_UNIT_DIGITS = {"JPY": 0, "KRW": 0, "CLP": 0, "ISK": 0, "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3, "TND": 3}
BAI2_DEFAULT_CURRENCY = "USD"  # the BAI2 specification's default when no currency is named
# The ingest's own limits: longer values are cut here (the full text is kept in description).
REFERENCE_MAX, COUNTERPARTY_MAX = 128, 255
CSV_COLUMNS = (
    "external_id",
    "amount",
    "currency",
    "booked_on",
    "reference",
    "counterparty",
    "description",
    "value_date",  # not a record column: kept in raw, like every other extra
    "bank_code",
)


@dataclass(frozen=True)
class BankEntry:
    external_id: str
    amount: Decimal
    currency: str
    booked_on: date
    value_on: date | None = None
    reference: str = ""
    counterparty: str = ""
    description: str = ""
    bank_code: str = ""  # the bank's transaction type (BkTxCd, GVC, BAI type code, TRNTYPE)
    label: str = field(default="", compare=False)  # how errors name it: "entry 3 (ref 0815)"


class StatementError(InvalidUpload):
    """A statement that cannot be read: names the format, the entry and the problem."""


def detect_format(content: bytes) -> str:
    """Tell the format from the first bytes; the upload names it (statement_format) when this cannot."""
    head = content[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    text = head.decode("latin-1")
    if text.startswith("<?xml") or text.startswith("<Document"):
        if re.search(r"camt\.05[23]", text):
            return "camt"
        if "camt.054" in text:
            raise StatementError("camt.054 (debit/credit notifications) is not supported; send the camt.053 statement")
        if "<OFX" in text.upper():
            return "ofx"
        raise StatementError("an XML file that is neither CAMT.053/.052 nor OFX")
    if text.startswith("OFXHEADER") or "<OFX>" in text.upper():
        return "ofx"
    if text.startswith("01,"):
        return "bai2"
    if text.startswith("{1:") or (":20:" in text and (":25:" in text or ":60F:" in text)):
        return "mt940"
    raise StatementError(
        f"cannot tell the statement format from its content; name it with statement_format={'|'.join(FORMATS)}"
    )


def entries_from_statement(content: bytes, statement_format: str | None = None) -> list[BankEntry]:
    statement_format = statement_format or detect_format(content)
    if statement_format not in READERS:
        raise StatementError(f"statement_format must be one of {', '.join(FORMATS)}")
    if not content.strip():
        raise StatementError("the statement is empty")
    entries = READERS[statement_format](content)
    if not entries:
        raise StatementError(f"the {statement_format} statement has no entries")
    return entries


def statement_ingest(
    *, job: ReconciliationJob, content: bytes, statement_format: str | None = None, side: str | None = None, user=None
) -> IngestResult:
    """Load a bank statement into `job`: every entry or none (a bad one is a StatementError)."""
    entries = entries_from_statement(content, statement_format)
    try:
        return records_ingest(job=job, csv_stream=entries_as_csv(entries), side=side, user=user)
    except InvalidUpload as error:
        if not error.row_errors:
            raise
        # The ingest's row numbers are entry numbers (one row per entry, in file order).
        named = [{**row, "entry": entries[row["row"] - 1].label} for row in error.row_errors]
        raise StatementError(
            f"{error.bad_rows} of {len(entries)} entries are invalid; nothing was imported; first: "
            f"{named[0]['entry']}: {'; '.join(named[0]['errors'])}",
            row_errors=named,
            bad_rows=error.bad_rows,
        ) from None


def entries_as_csv(entries: list[BankEntry]) -> io.BytesIO:
    """The entries as a CSV in the ingest's columns, one row per entry in file order (so the
    ingest's row numbers are entry numbers)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        writer.writerow(
            [
                entry.external_id,
                f"{entry.amount:f}",
                entry.currency,
                entry.booked_on.isoformat(),
                entry.reference[:REFERENCE_MAX],
                entry.counterparty[:COUNTERPARTY_MAX],
                entry.description,
                entry.value_on.isoformat() if entry.value_on else "",
                entry.bank_code,
            ]
        )
    return io.BytesIO(text.getvalue().encode())


def _label(number: int, reference: str | None) -> str:
    return f"entry {number}" + (f" (ref {reference})" if reference else "")


def _decimal(value, label: str) -> Decimal:
    try:
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise StatementError(f"{label}: amount {str(value)[:40]!r} is not a number") from None
    if not amount.is_finite():
        raise StatementError(f"{label}: amount {str(value)[:40]!r} is not a number")
    return amount


def _iso_date(value: str | None, label: str, what: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise StatementError(f"{label}: {what} {value[:40]!r} is not a date") from None


# --- CAMT.053 / .052 (pycamt) ------------------------------------------------------------------


CAMT_CODE_KEYS = ("BankTransactionCode", "TransactionFamilyCode", "TransactionSubFamilyCode")


def _camt_entries(content: bytes) -> list[BankEntry]:
    try:
        transactions = Camt053Parser(content).get_transactions()
    except (etree.LxmlError, ValueError) as error:
        raise StatementError(f"camt: the XML cannot be read: {_first_line(error)}") from None
    except Camt053ParseError:
        raise StatementError("camt: no statement (Stmt) or report (Rpt) in the document") from None
    entries, seen = [], {}
    for number, tx in enumerate(transactions, start=1):
        reference = tx.get("TransactionID")
        label = _label(number, reference or tx.get("EndToEndId"))
        if not reference:
            raise StatementError(f"{label}: no bank reference (AcctSvcrRef)")
        mark = tx.get("CreditDebitIndicator")
        if mark not in ("CRDT", "DBIT"):
            raise StatementError(f"{label}: credit/debit indicator must be CRDT or DBIT, not {mark!r}")
        if not tx.get("Amount"):
            raise StatementError(f"{label}: no amount (Amt)")
        amount = _decimal(tx["Amount"], label)
        booked_on = _iso_date(tx.get("BookingDate"), label, "booking date")
        if booked_on is None:
            raise StatementError(f"{label}: no booking date (BookgDt)")
        # An entry of several transactions (a batch) gives one record each: 0815/1, 0815/2.
        seen[reference] = seen.get(reference, 0) + 1
        # The other party: who paid us on a credit, whom we paid on a debit.
        party = tx.get("DebtorName") if mark == "CRDT" else tx.get("CreditorName")
        entries.append(
            BankEntry(
                external_id=reference,
                amount=amount if mark == "CRDT" else -amount,
                currency=tx.get("Currency") or "",
                booked_on=booked_on,
                value_on=_iso_date(tx.get("ValueDate"), label, "value date"),
                reference=tx.get("RemittanceInformation") or tx.get("EndToEndId") or "",
                counterparty=party or "",
                description=tx.get("RemittanceInformationFull") or tx.get("AdditionalEntryInformation") or "",
                bank_code="/".join(filter(None, [tx.get(key) for key in CAMT_CODE_KEYS])),
                label=label,
            )
        )
    if any(count > 1 for count in seen.values()):
        entries = _number_batch_entries(entries, seen)
    return entries


def _number_batch_entries(entries: list[BankEntry], seen: dict[str, int]) -> list[BankEntry]:
    position: dict[str, int] = {}
    numbered = []
    for entry in entries:
        if seen[entry.external_id] == 1:
            numbered.append(entry)
            continue
        position[entry.external_id] = position.get(entry.external_id, 0) + 1
        external_id = f"{entry.external_id}/{position[entry.external_id]}"
        numbered.append(BankEntry(**{**entry.__dict__, "external_id": external_id}))
    return numbered


# --- MT940 (mt-940) ----------------------------------------------------------------------------


def _mt940_entries(content: bytes) -> list[BankEntry]:
    # SWIFT's character set is a subset of Latin-1; German banks write their umlauts in it too.
    text = content.decode("utf-8-sig") if _is_utf8(content) else content.decode("latin-1")
    try:
        transactions = mt940.parse(text, options=mt940.Options.all())
    except Exception as error:  # the library raises ValueError, KeyError, RuntimeError by tag
        raise StatementError(f"mt940: the statement cannot be read: {_first_line(error)}") from None
    currency = transactions.currency or ""
    entries = []
    for number, tx in enumerate(transactions, start=1):
        data = tx.data
        bank_ref = (data.get("bank_reference") or "").strip()
        # The account servicer's reference identifies the entry; NONREF means the owner gave none.
        customer_ref = (data.get("customer_reference") or "").strip()
        customer_ref = "" if customer_ref.upper() == "NONREF" else customer_ref
        external_id = bank_ref or customer_ref
        label = _label(number, external_id)
        if not external_id:
            raise StatementError(f"{label}: no bank reference (the :61: field after //)")
        amount = data.get("amount")
        if amount is None:
            raise StatementError(f"{label}: no amount in :61:")
        value_on, booked_on = data.get("date"), data.get("entry_date") or data.get("date")
        if booked_on is None:
            raise StatementError(f"{label}: no date in :61:")
        details = data.get("transaction_details") or ""
        entries.append(
            BankEntry(
                external_id=external_id,
                amount=Decimal(amount.amount),
                currency=amount.currency or currency,
                booked_on=date(booked_on.year, booked_on.month, booked_on.day),
                value_on=date(value_on.year, value_on.month, value_on.day) if value_on else None,
                reference=data.get("end_to_end_reference") or customer_ref,
                counterparty=data.get("applicant_name") or "",
                description=data.get("purpose") or details.replace("\n", " "),
                bank_code=data.get("transaction_code") or data.get("id") or "",
                label=label,
            )
        )
    return entries


def _is_utf8(content: bytes) -> bool:
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --- BAI2 (bai2) -------------------------------------------------------------------------------


def _bai2_entries(content: bytes) -> list[BankEntry]:
    try:
        document = bai2_reader.parse_from_string(content.decode("latin-1"), check_integrity=True)
    except (bai2.exceptions.ParsingException, bai2.exceptions.IntegrityException) as error:
        raise StatementError(f"bai2: {_first_line(error)}") from None
    except bai2.exceptions.NotSupportedYetException as error:
        raise StatementError(f"bai2: {_first_line(error)}") from None
    except Exception as error:  # the parser's own checks raise the above; anything else is a bad file too
        raise StatementError(f"bai2: a record cannot be read: {_first_line(error)}") from None
    entries, number = [], 0
    for group in document.children:
        as_of = group.header.as_of_date
        for account in group.children:
            currency = account.header.currency or group.header.currency or BAI2_DEFAULT_CURRENCY
            for detail in account.children:
                number += 1
                entries.append(_bai2_entry(detail, number=number, as_of=as_of, currency=currency))
    return entries


def _bai2_entry(detail, *, number: int, as_of, currency: str) -> BankEntry:
    label = _label(number, detail.bank_reference or detail.customer_reference)
    if not detail.bank_reference:
        raise StatementError(f"{label}: no bank reference (16 record, field 5)")
    type_code = detail.type_code
    if type_code is None or getattr(type_code.transaction, "value", None) not in ("credit", "debit"):
        code = getattr(type_code, "code", "?")
        raise StatementError(f"{label}: type code {code} is not a credit or debit detail code")
    if detail.amount is None:
        raise StatementError(f"{label}: no amount")
    if as_of is None:
        raise StatementError(f"{label}: the group header (02) has no as-of date")
    amount = Decimal(detail.amount).scaleb(-MINOR_UNIT_DIGITS.get(currency, 2))
    credit = type_code.transaction.value == "credit"
    text = (detail.text or "").strip()
    return BankEntry(
        external_id=detail.bank_reference,
        amount=amount if credit else -amount,
        currency=currency,
        booked_on=as_of,
        value_on=_bai2_value_date(detail.funds_type, as_of),
        reference=detail.customer_reference or "",
        counterparty="",  # BAI2 has no counterparty field; the text often names it
        description=text,
        bank_code=type_code.code,
        label=label,
    )


def _bai2_value_date(funds_type, as_of: date) -> date | None:
    # Funds type 0 is available the same day, 1 the next; 2 ("two or more days"), distributed
    # and value-dated (V) availability are not one date that the detail record carries.
    days = {"0": 0, "1": 1}.get(getattr(funds_type, "value", None))
    return as_of + timedelta(days=days) if days is not None else None


# --- OFX (ofxparse) ----------------------------------------------------------------------------


def _ofx_entries(content: bytes) -> list[BankEntry]:
    try:
        document = ofxparse.OfxParser.parse(io.BytesIO(content), fail_fast=True)
    except ofxparse.OfxParserException as error:
        raise StatementError(f"ofx: {_ofx_problem(error, content)}") from None
    except Exception as error:  # beautifulsoup and ofxparse raise many kinds on a broken file
        raise StatementError(f"ofx: the file cannot be read: {_first_line(error)}") from None
    accounts = getattr(document, "accounts", None) or []
    entries, number = [], 0
    for account in accounts:
        statement = getattr(account, "statement", None)
        currency = (getattr(statement, "currency", None) or getattr(account, "curdef", None) or "").upper()
        for tx in getattr(statement, "transactions", []):
            number += 1
            label = _label(number, tx.id)
            if not tx.id:
                raise StatementError(f"{label}: no FITID")
            posted: datetime | None = tx.date
            entries.append(
                BankEntry(
                    external_id=tx.id,
                    amount=_decimal(tx.amount, label),  # TRNAMT carries its sign
                    currency=currency,
                    booked_on=posted.date(),
                    value_on=tx.user_date.date() if tx.user_date else None,
                    reference=tx.checknum or tx.memo or "",
                    counterparty=tx.payee or "",
                    description=tx.memo or "",
                    bank_code=(tx.type or "").upper(),
                    label=label,
                )
            )
    return entries


def _ofx_problem(error: Exception, content: bytes) -> str:
    """ofxparse names the problem but not the transaction: find the first STMTTRN it refuses."""
    problem = _first_line(error)
    blocks = re.findall(rb"<STMTTRN>(.*?)</STMTTRN>", content, flags=re.S | re.I)
    for number, block in enumerate(blocks, start=1):
        fitid = re.search(rb"<FITID>\s*([^<\r\n]+)", block, flags=re.I)
        probe = b"<OFX><STMTTRN>" + block + b"</STMTTRN></OFX>"
        try:
            ofxparse.OfxParser.parseTransaction(ofxparse.ofxparse.soup_maker(io.BytesIO(probe)).find("stmttrn"))
        except Exception:
            return f"{_label(number, fitid.group(1).decode('latin-1').strip() if fitid else None)}: {problem}"
    return problem


def _first_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text[:300] if text else error.__class__.__name__


READERS: dict[str, Callable[[bytes], list[BankEntry]]] = {
    "camt": _camt_entries,
    "mt940": _mt940_entries,
    "bai2": _bai2_entries,
    "ofx": _ofx_entries,
}
