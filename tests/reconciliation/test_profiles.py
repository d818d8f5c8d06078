"""Source profiles: a CSV in its source's own shape (headers, dates, decimal commas, debit and
credit columns, Windows-1252 or a UTF-8 BOM) loads through COPY like a plain CSV."""

from datetime import date
from decimal import Decimal

import pytest
from django.urls import reverse

from project.models import ActivityLog
from reconciliation.errors import InvalidProfile, InvalidUpload
from reconciliation.ingest.profiles import records_ingest_with_profile, source_profile_create
from reconciliation.models import Record, SourceProfile, TenantMembership
from tests.reconciliation.factories import JobFactory, TenantFactory, member

pytestmark = pytest.mark.django_db
Role = TenantMembership.Role

# A German bank's export: semicolons, DD.MM.YYYY, 1.234,56, separate Soll (debit) and Haben (credit).
GERMAN = {
    "columns": {
        "external_id": "Buchungs-ID",
        "booked_on": "Buchungstag",
        "value_date": "Valuta",
        "debit": "Soll",
        "credit": "Haben",
        "currency": "Währung",
        "reference": "Verwendungszweck",
        "counterparty": "Empfänger/Zahlungspflichtiger",
    },
    "date_format": "DD.MM.YYYY",
    "decimal_separator": ",",
    "thousands_separator": ".",
    "delimiter": ";",
    "encoding": "windows-1252",
}
GERMAN_CSV = (
    "Buchungs-ID;Buchungstag;Valuta;Empfänger/Zahlungspflichtiger;Verwendungszweck;Soll;Haben;Währung;Filiale\r\n"
    "B-1;10.03.2026;11.03.2026;Müller GmbH;RE 2026-0012;;1.234,56;EUR;Köln\r\n"
    'B-2;11.03.2026;;"Bäckerei Süß; Inh. Groß";Miete März;2.000,00;0,00;EUR;Köln\r\n'
)


def profile(tenant, **overrides) -> SourceProfile:
    return source_profile_create(tenant=tenant, name=overrides.pop("name", "Sparkasse"), **(GERMAN | overrides))


def ingest(job, prof, text: str, encoding: str = "cp1252", **kwargs):
    import io

    return records_ingest_with_profile(job=job, profile=prof, csv_stream=io.BytesIO(text.encode(encoding)), **kwargs)


def test_a_windows_1252_export_with_decimal_commas_and_debit_credit_columns_maps_onto_records():
    job = JobFactory()

    result = ingest(job, profile(job.tenant), GERMAN_CSV, side="left")

    assert (result.received, result.inserted, result.rejected) == (2, 2, 0)
    rows = list(
        Record.objects.filter(job=job)
        .order_by("external_id")
        .values_list("external_id", "amount", "currency", "booked_on", "reference", "counterparty", "raw", "side")
    )
    assert rows == [
        (
            "B-1",
            Decimal("1234.5600"),
            "EUR",
            date(2026, 3, 10),
            "RE 2026-0012",
            "Müller GmbH",
            {"Filiale": "Köln", "value_date": "2026-03-11"},
            "left",
        ),
        (
            "B-2",
            Decimal("-2000.0000"),  # the debit column, 0,00 in the credit one
            "EUR",
            date(2026, 3, 11),
            "Miete März",
            "Bäckerei Süß; Inh. Groß",
            {"Filiale": "Köln"},  # no value date given
            "left",
        ),
    ]


def test_a_utf8_file_with_a_byte_order_mark_and_a_signed_amount_column():
    job = JobFactory()
    prof = profile(
        job.tenant,
        name="Card acquirer",
        columns={"external_id": "Txn", "amount": "Amount", "booked_on": "Date", "description": "Note"},
        date_format="MM/DD/YYYY",
        decimal_separator=".",
        thousands_separator=",",
        delimiter=",",
        encoding="utf-8",
        default_currency="USD",
    )
    text = '\ufeffTxn,Date,Amount,Note\nT1,03/10/2026,"1,500.00",naïve café\nT2,03/11/2026,-250.75,\n'

    ingest(job, prof, text, encoding="utf-8", side="right")

    assert list(
        Record.objects.filter(job=job)
        .order_by("external_id")
        .values_list("amount", "currency", "booked_on", "description")
    ) == [
        (Decimal("1500.0000"), "USD", date(2026, 3, 10), "naïve café"),
        (Decimal("-250.7500"), "USD", date(2026, 3, 11), ""),
    ]


def test_bad_rows_are_named_in_the_profiles_terms_and_nothing_is_imported():
    job = JobFactory()
    text = GERMAN_CSV + "B-3;31.02.2026;;X;Y;;12,5x;EUR;Köln\r\nB-4;2026-03-12;;X;Y;1,00;2,00;EUR;Köln\r\n"

    with pytest.raises(InvalidUpload) as raised:
        ingest(job, profile(job.tenant), text, side="left")

    assert raised.value.row_errors == [
        {
            "row": 3,
            "errors": [
                "amount: must be a decimal number with at most 14 digits before and 4 after the point",
                "booked_on: must be a date written DD.MM.YYYY",
            ],
        },
        {
            "row": 4,
            "errors": [
                "amount: must be a decimal number with at most 14 digits before and 4 after the point",
                "booked_on: must be a date written DD.MM.YYYY",
            ],
        },
    ]
    assert not Record.objects.filter(job=job).exists()


def test_a_file_without_a_mapped_column_names_it_and_the_files_columns():
    job = JobFactory()

    with pytest.raises(InvalidUpload, match=r"no column for currency \('Währung'\); its columns are 'Buchungs-ID'"):
        ingest(job, profile(job.tenant), GERMAN_CSV.replace("Währung", "Waehrung"), side="left")


def test_a_header_with_a_nul_character_is_refused():
    job = JobFactory()

    with pytest.raises(InvalidUpload, match="NUL"):
        ingest(job, profile(job.tenant), GERMAN_CSV.replace("Filiale", "Fil\x00iale"), side="left")


def test_reuploading_through_a_profile_changes_nothing():
    job = JobFactory()
    prof = profile(job.tenant)
    ingest(job, prof, GERMAN_CSV, side="left")

    again = ingest(job, prof, GERMAN_CSV, side="left")

    assert (again.inserted, again.unchanged) == (0, 2)


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"columns": {"external_id": "a", "booked_on": "b"}}, "columns", "map either amount (signed) or both"),
        ({"columns": {"external_id": "a", "booked_on": "b", "amount": "c", "debit": "d"}}, "columns", "either"),
        ({"columns": {"external_id": "a", "booked_on": "b", "debit": "d"}}, "columns", "come together"),
        ({"columns": {"external_id": "a", "amount": "b", "currency": "c"}}, "columns", "missing booked_on"),
        ({"columns": {"external_id": "a", "booked_on": "b", "amount": "A", "iban": "x"}}, "columns", "unknown fields"),
        ({"columns": {"external_id": "a", "booked_on": "A", "amount": "a"}}, "columns", "the same column"),
        ({"date_format": "DD.MM"}, "date_format", "the year once"),
        ({"date_format": "%d.%m.%Y"}, "date_format", "DD, MM and YYYY"),
        ({"decimal_separator": ";"}, "decimal_separator", "one of"),
        ({"thousands_separator": ","}, "thousands_separator", "must differ"),
        ({"delimiter": "x"}, "delimiter", "one of"),
        ({"default_currency": "eur"}, "default_currency", "3-letter"),
    ],
)
def test_a_profile_that_cannot_work_is_refused_naming_the_field(overrides, field, message):
    tenant = TenantFactory()
    settings = GERMAN | {"decimal_separator": ",", "thousands_separator": "."} | overrides
    if field == "thousands_separator":
        settings["decimal_separator"] = ","

    with pytest.raises(InvalidProfile) as raised:
        source_profile_create(tenant=tenant, name="x", **settings)

    assert message in raised.value.errors[field]


# --- Through the API ---------------------------------------------------------------------------


def test_admins_write_profiles_operators_upload_with_them_and_every_write_is_audited(client_for):
    tenant = TenantFactory()
    admin, operator = member(tenant, Role.ADMIN), member(tenant, Role.OPERATOR)
    body = {"tenant": tenant.pk, "name": "Sparkasse"} | GERMAN

    assert client_for(operator).post(reverse("recon-source-profile-list"), body, format="json").status_code == 403
    created = client_for(admin).post(reverse("recon-source-profile-list"), body, format="json")
    duplicate = client_for(admin).post(reverse("recon-source-profile-list"), body, format="json")
    renamed = client_for(admin).patch(
        reverse("recon-source-profile-detail", kwargs={"pk": created.json()["id"]}), {"name": "Spk"}, format="json"
    )

    assert created.status_code == 201, created.content
    assert duplicate.status_code == 400
    assert "already has a profile named 'Sparkasse'" in str(duplicate.json())
    assert renamed.json()["name"] == "Spk"
    job = JobFactory(tenant=tenant)
    url = reverse("recon-job-records", kwargs={"pk": job.pk})
    response = client_for(operator).post(
        f"{url}?side=left&profile={created.json()['id']}", data=GERMAN_CSV.encode("cp1252"), content_type="text/csv"
    )
    assert response.status_code == 201, response.content
    assert response.json()["inserted"] == 2
    assert list(
        ActivityLog.objects.filter(entity_type="reconciliation.source_profile").values_list("action", flat=True)
    ) == ["source_profile_create", "source_profile_update"]


def test_an_upload_naming_another_tenants_profile_is_a_400_and_imports_nothing(client_for):
    other = profile(TenantFactory())
    job = JobFactory()
    url = reverse("recon-job-records", kwargs={"pk": job.pk})

    for value in (str(other.pk), "abc", "99999999999999999999"):
        response = client_for(member(job.tenant, Role.OPERATOR)).post(
            f"{url}?side=left&profile={value}", data=GERMAN_CSV.encode("cp1252"), content_type="text/csv"
        )
        assert response.status_code == 400, response.content
        assert "no source profile" in response.json()["error"]["message"]
    assert not Record.objects.filter(job=job).exists()


def test_a_profile_upload_must_be_a_csv(client_for):
    job = JobFactory()
    prof = profile(job.tenant)
    url = reverse("recon-job-records", kwargs={"pk": job.pk})

    response = client_for(member(job.tenant, Role.OPERATOR)).post(
        f"{url}?side=left&profile={prof.pk}", [{"external_id": "x"}], format="json"
    )

    assert response.status_code == 400
    assert "A profile maps a CSV" in str(response.json())
