"""Bank statements through the API: each format's sample ends as records with every field mapped;
a malformed file of each format is a 400 naming the entry, and nothing is imported."""

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from reconciliation.ingest.bankfiles import StatementError, detect_format, entries_from_statement
from reconciliation.models import Record, TenantMembership
from tests.reconciliation.factories import JobFactory, TenantFactory, member

pytestmark = pytest.mark.django_db
Role = TenantMembership.Role
SAMPLES = Path(__file__).parent / "samples"

# What each sample's two entries must become: (external_id, amount, currency, booked_on,
# reference, counterparty, description, raw).
EXPECTED = {
    "camt053.xml": [
        (
            "ABN-20260310-000871",
            Decimal("1500.0000"),
            "EUR",
            date(2026, 3, 10),
            "INV-2026-0012",
            "Acme Trading BV",  # the debtor of a credit
            "INV-2026-0012 March consulting",
            {"value_date": "2026-03-10", "bank_code": "PMNT/RCDT/ESCT"},
        ),
        (
            "ABN-20260311-000112",
            Decimal("-250.7500"),
            "EUR",
            date(2026, 3, 11),
            "RF18539007547034",  # structured creditor reference
            "Cloudhost GmbH",  # the creditor of a debit
            "",
            {"value_date": "2026-03-12", "bank_code": "PMNT/RDDT/ESDD"},
        ),
    ],
    "mt940.sta": [
        (
            "PAY-778812",
            Decimal("1500.0000"),
            "EUR",
            date(2026, 3, 10),
            "INV-2026-0012",  # EREF+
            "Acme Trading BV",  # ?32
            "Invoice 2026-0012 March consulting",  # SVWZ+ over ?21 and ?22
            {"value_date": "2026-03-10", "bank_code": "166"},
        ),
        (
            "DD-99812",
            Decimal("-250.7500"),
            "EUR",
            date(2026, 3, 11),  # entry date 0311; value date 260312
            "SUBS-APR-2026",
            "Cloudhost GmbH",
            "Subscription April",
            {"value_date": "2026-03-12", "bank_code": "105"},
        ),
    ],
    "bai2.txt": [
        (
            "FED-20260310-7781",
            Decimal("1500.0000"),  # 150000 cents, type 195: incoming wire (credit)
            "USD",
            date(2026, 3, 10),  # the group's as-of date
            "INV-2026-0012",  # customer reference
            "",
            "INCOMING WIRE ACME TRADING LLC,INVOICE 2026-0012 MARCH CONSULTING",  # text + 88 continuation
            {"value_date": "2026-03-10", "bank_code": "195"},  # funds type 0: same day
        ),
        (
            "CHK-000112",
            Decimal("-250.7500"),  # type 475: check paid (debit)
            "USD",
            date(2026, 3, 10),
            "1042",
            "",
            "CHECK PAID",
            {"value_date": "2026-03-11", "bank_code": "475"},  # funds type 1: next day
        ),
    ],
    "ofx.ofx": [
        (
            "202603100001",
            Decimal("1500.0000"),
            "USD",
            date(2026, 3, 10),
            "INV-2026-0012 March consulting",  # MEMO when there is no CHECKNUM
            "Acme Trading LLC",
            "INV-2026-0012 March consulting",
            {"value_date": "2026-03-09", "bank_code": "CREDIT"},  # DTUSER
        ),
        (
            "202603110002",
            Decimal("-250.7500"),
            "USD",
            date(2026, 3, 11),
            "1042",  # CHECKNUM
            "Cloudhost Inc",
            "Subscription April",
            {"bank_code": "CHECK"},
        ),
    ],
}


def upload(client, job, body: bytes, *, content_type="application/octet-stream", **params):
    url = reverse("recon-statement-upload", kwargs={"pk": job.pk})
    query = "&".join(f"{key}={value}" for key, value in {"side": "left", **params}.items())
    return client.post(f"{url}?{query}", data=body, content_type=content_type)


@pytest.fixture
def job_and_client(client_for):
    job = JobFactory(tenant=TenantFactory())
    return job, client_for(member(job.tenant, Role.OPERATOR))


@pytest.mark.parametrize("sample", sorted(EXPECTED))
def test_each_formats_sample_becomes_records_with_every_field_mapped(sample, job_and_client):
    job, client = job_and_client

    response = upload(client, job, (SAMPLES / sample).read_bytes())

    assert response.status_code == 201, response.content
    assert response.json()["inserted"] == 2
    records = Record.objects.filter(job=job).order_by("id")
    assert [
        (r.external_id, r.amount, r.currency, r.booked_on, r.reference, r.counterparty, r.description, r.raw)
        for r in records
    ] == EXPECTED[sample]
    assert {r.side for r in records} == {"left"}


@pytest.mark.parametrize(
    ("sample", "statement_format"),
    [("camt053.xml", "camt"), ("mt940.sta", "mt940"), ("bai2.txt", "bai2"), ("ofx.ofx", "ofx")],
)
def test_the_format_is_told_from_the_content(sample, statement_format):
    assert detect_format((SAMPLES / sample).read_bytes()) == statement_format


def test_a_statement_sent_again_changes_nothing_and_a_multipart_file_is_read_too(job_and_client):
    job, client = job_and_client
    content = (SAMPLES / "mt940.sta").read_bytes()
    upload(client, job, content, statement_format="mt940")

    url = reverse("recon-statement-upload", kwargs={"pk": job.pk})
    again = client.post(f"{url}?side=left", {"file": SimpleUploadedFile("day.sta", content)}, format="multipart")

    assert again.status_code == 200, again.content
    assert again.json() | {"errors": []} == {"received": 2, "inserted": 0, "unchanged": 2, "rejected": 0, "errors": []}
    assert Record.objects.filter(job=job).count() == 2


def _broken(sample: str, old: str, new: str) -> bytes:
    text = (SAMPLES / sample).read_text()
    assert old in text
    return text.replace(old, new, 1).encode()


# One malformed file per format, and what the 400 must name.
MALFORMED = [
    pytest.param(
        _broken(
            "camt053.xml", "<CdtDbtInd>DBIT</CdtDbtInd>\n        <Sts>", "<CdtDbtInd>XXXX</CdtDbtInd>\n        <Sts>"
        ),
        "entry 2 (ref ABN-20260311-000112): credit/debit indicator must be CRDT or DBIT, not 'XXXX'",
        id="camt-bad-indicator",
    ),
    pytest.param(
        _broken("camt053.xml", "<BookgDt><Dt>2026-03-11</Dt></BookgDt>", "<BookgDt><Dt>2026-02-31</Dt></BookgDt>"),
        "entry 2 (ref ABN-20260311-000112): booking date '2026-02-31' is not a date",
        id="camt-bad-date",
    ),
    pytest.param(
        _broken("camt053.xml", "</BkToCstmrStmt>", ""),
        "camt: the XML cannot be read",
        id="camt-not-xml",
    ),
    pytest.param(
        _broken("mt940.sta", ":61:2603120311D250,75NDDTSUBS-APR//DD-99812", ":61:2603120311D250,75NDDTNONREF"),
        "entry 2: no bank reference",
        id="mt940-no-reference",
    ),
    pytest.param(
        _broken("bai2.txt", "16,475,25075,1,CHK-000112", "16,475,25075,1,"),
        "entry 2 (ref 1042): no bank reference",  # named by the customer reference it has
        id="bai2-no-reference",
    ),
    pytest.param(
        _broken("bai2.txt", "16,475,25075", "16,890,25075"),
        "entry 2 (ref CHK-000112): type code 890 is not a credit or debit detail code",
        id="bai2-non-monetary-code",
    ),
    pytest.param(
        _broken("bai2.txt", "49,2800000,5/", "49,2800001,5/"),
        "bai2: Invalid account control total",
        id="bai2-control-total",
    ),
    pytest.param(
        _broken("ofx.ofx", "<TRNAMT>-250.75", "<TRNAMT>-250,75x"),
        "entry 2 (ref 202603110002): Invalid Transaction Amount",
        id="ofx-bad-amount",
    ),
    pytest.param(
        _broken("ofx.ofx", "<DTPOSTED>20260311\n", "<DTPOSTED>20261311\n"),
        "entry 2 (ref 202603110002): unconverted data remains",
        id="ofx-bad-date",
    ),
]


@pytest.mark.parametrize(("content", "named"), MALFORMED)
def test_a_malformed_file_is_a_400_naming_the_entry_and_nothing_is_imported(content, named, job_and_client):
    job, client = job_and_client

    response = upload(client, job, content)

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_upload"
    assert named in response.json()["error"]["message"]
    assert not Record.objects.filter(job=job).exists()


def test_an_mt940_entry_without_a_bank_reference_is_known_by_the_customer_reference(job_and_client):
    job, client = job_and_client
    content = _broken("mt940.sta", "D250,75NDDTSUBS-APR//DD-99812", "D250,75NDDTSUBS-APR")

    response = upload(client, job, content)

    assert response.status_code == 201, response.content
    assert set(Record.objects.filter(job=job).values_list("external_id", flat=True)) == {"PAY-778812", "SUBS-APR"}


def test_an_entry_the_ingest_refuses_is_named_by_its_entry_and_reference(job_and_client):
    job, client = job_and_client
    # A currency code the ingest refuses (not three letters).
    content = _broken(
        "camt053.xml",
        '<Amt Ccy="EUR">250.75</Amt>\n        <CdtDbtInd>DBIT',
        '<Amt Ccy="EURO">250.75</Amt>\n        <CdtDbtInd>DBIT',
    )

    response = upload(client, job, content)

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["rows"] == [
        {
            "row": 2,
            "entry": "entry 2 (ref ABN-20260311-000112)",
            "errors": ["currency: must be a 3-letter ISO 4217 code"],
        }
    ]
    assert "entry 2 (ref ABN-20260311-000112): currency" in error["message"]
    assert not Record.objects.filter(job=job).exists()


@pytest.mark.parametrize(
    ("body", "params", "message"),
    [
        (b"just some text", {}, "cannot tell the statement format"),
        (b"", {"statement_format": "ofx"}, "the statement is empty"),
        (b"01,x", {"statement_format": "qif"}, "statement_format"),
        ((SAMPLES / "ofx.ofx").read_bytes(), {"side": "middle"}, "side must be left or right"),
    ],
)
def test_unusable_uploads_are_400_saying_why(body, params, message, job_and_client):
    job, client = job_and_client

    response = upload(client, job, body, **params)

    assert response.status_code == 400, response.content
    assert message in str(response.json())
    assert not Record.objects.filter(job=job).exists()


def test_a_batch_entry_of_several_transactions_gives_numbered_records():
    text = (SAMPLES / "camt053.xml").read_text()
    # A second transaction inside the first entry (a batch booking).
    text = text.replace(
        "</TxDtls>\n        </NtryDtls>",
        "</TxDtls>\n          <TxDtls><Refs><EndToEndId>E2E-2</EndToEndId></Refs>"
        '<AmtDtls><TxAmt><Amt Ccy="EUR">0.00</Amt></TxAmt></AmtDtls></TxDtls>\n        </NtryDtls>',
        1,
    )

    entries = entries_from_statement(text.encode())

    assert [e.external_id for e in entries] == ["ABN-20260310-000871/1", "ABN-20260310-000871/2", "ABN-20260311-000112"]


def test_camt054_is_refused_by_name():
    with pytest.raises(StatementError, match=r"camt\.054"):
        detect_format(b'<?xml version="1.0"?><Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.054.001.02">')


def test_a_viewer_cannot_load_a_statement(client_for):
    job = JobFactory(tenant=TenantFactory())
    response = upload(client_for(member(job.tenant, Role.VIEWER)), job, (SAMPLES / "ofx.ofx").read_bytes())

    assert response.status_code == 403
    assert not Record.objects.filter(job=job).exists()


def test_options_on_the_statement_upload_names_the_view_without_a_form(job_and_client):
    job, client = job_and_client

    response = client.options(reverse("recon-statement-upload", kwargs={"pk": job.pk}))

    assert response.status_code == 200
    assert "actions" not in response.json()
