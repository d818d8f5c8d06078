"""The export of an execution: every match and exception, with both sides' external ids and amounts,
as CSV or NDJSON, streamed in one response, throttled in its own scope."""

import csv
import io
import json

import pytest
from django.conf import settings
from django.urls import reverse
from rest_framework.throttling import SimpleRateThrottle

from project.cachebreaker import breaker_open
from reconciliation.api.export import ExecutionExportViewSet
from reconciliation.models import Execution, Match, ReconciliationException, TenantMembership
from tests.reconciliation.factories import JobFactory, TenantFactory, load, member
from tests.reconciliation.test_api import run

pytestmark = pytest.mark.django_db
Role = TenantMembership.Role


@pytest.fixture
def finished():
    """An execution with an exact match, a split payment (one left, two right) and an exception."""
    job = JobFactory(tenant=TenantFactory())
    load(
        job,
        "left",
        [
            ("L1", "100.00", "EUR", "2026-03-10", "INV-1"),
            ("L2", "300.00", "EUR", "2026-03-10", "INV-2"),
            ("L9", "7.00", "EUR", "2026-03-10", 'odd "ref", \\ and ;'),
        ],
    )
    load(
        job,
        "right",
        [
            ("R1", "100.00", "EUR", "2026-03-10", "INV-1"),
            ("R2a", "100.00", "EUR", "2026-03-10", "INV-2"),
            ("R2b", "200.00", "EUR", "2026-03-10", "INV-2"),
        ],
    )
    return run(job)


def export(client, execution: Execution, **params):
    response = client.get(reverse("recon-export-execution", kwargs={"pk": execution.pk}), params)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response, body.decode()


def expected_rows(execution: Execution) -> list[dict]:
    """What the export must say, built from the ORM, one dict per match or exception."""
    rows = []
    for match in Match.objects.filter(execution_id=execution.pk).order_by("id"):
        ids = {
            side: ";".join(
                sorted(
                    execution.job.records.filter(pk__in=getattr(match, f"{side}_ids")).values_list(
                        "external_id", flat=True
                    )
                )
            )
            for side in ("left", "right")
        }
        rows.append(
            {
                "kind": "match",
                "match_id": str(match.id),
                "left_external_ids": ids["left"],
                "right_external_ids": ids["right"],
                "left_amount": str(match.left_amount),
                "right_amount": str(match.right_amount),
            }
        )
    for exception in ReconciliationException.objects.filter(execution_id=execution.pk).order_by("id"):
        record = execution.job.records.get(pk=exception.record_id)
        rows.append(
            {
                "kind": "exception",
                "match_id": "",
                "left_external_ids": record.external_id if exception.side == "left" else "",
                "right_external_ids": record.external_id if exception.side == "right" else "",
                "left_amount": str(exception.amount) if exception.side == "left" else "",
                "right_amount": str(exception.amount) if exception.side == "right" else "",
            }
        )
    return rows


def test_the_csv_export_carries_both_sides_external_ids_and_amounts(finished, client_for):
    client = client_for(member(finished.job.tenant, Role.VIEWER))

    response, body = export(client, finished)

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(body)))
    keys = ("kind", "match_id", "left_external_ids", "right_external_ids", "left_amount", "right_amount")
    assert [{key: row[key] for key in keys} for row in rows] == expected_rows(finished)
    # The fixture's data: a split payment's two right records, and the unmatched left one.
    assert {row["right_external_ids"] for row in rows if row["kind"] == "match"} == {"R1", "R2a;R2b"}
    assert [row["left_external_ids"] for row in rows if row["kind"] == "exception"] == ["L9"]
    assert {row["currency"] for row in rows} == {"EUR"}


def test_the_ndjson_export_is_one_json_object_per_line_with_the_same_rows(finished, client_for):
    client = client_for(member(finished.job.tenant, Role.VIEWER))

    response, body = export(client, finished, **{"as": "ndjson"})

    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in body.splitlines()]
    as_text = [
        {
            key: "" if value is None else str(value)
            for key, value in line.items()
            if key in ("kind", "match_id", "left_external_ids", "right_external_ids", "left_amount", "right_amount")
        }
        for line in lines
    ]
    assert as_text == expected_rows(finished)


def test_ndjson_keeps_backslashes_and_quotes_of_external_ids_intact(client_for):
    job = JobFactory(tenant=TenantFactory())
    load(job, "left", [("A\\1", "5.00", "EUR", "2026-03-10")])
    execution = run(job)

    _, body = export(client_for(member(job.tenant, Role.VIEWER)), execution, **{"as": "ndjson"})

    assert [json.loads(line)["left_external_ids"] for line in body.splitlines()] == ["A\\1"]


def test_an_unknown_as_is_a_json_400_even_when_csv_was_accepted(finished, client_for):
    client = client_for(member(finished.job.tenant, Role.VIEWER))

    response = client.get(
        reverse("recon-export-execution", kwargs={"pk": finished.pk}), {"as": "xlsx"}, HTTP_ACCEPT="text/csv"
    )

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert "one of csv, ndjson" in str(response.json())


def test_exports_have_their_own_throttle_scope_and_do_not_spend_the_user_budget(finished, client_for, monkeypatch):
    rates = SimpleRateThrottle.THROTTLE_RATES | {"export": "2/min", "user": "3/min"}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)
    client = client_for(member(finished.job.tenant, Role.VIEWER))

    statuses = [export(client, finished)[0].status_code for _ in range(3)]
    # The user scope is untouched by the exports: three ordinary reads still pass.
    reads = [client.get(reverse("recon-execution-detail", kwargs={"pk": finished.pk})).status_code for _ in range(3)]

    if breaker_open():
        # Redis answered slower than its 0.5 s socket timeout (a loaded machine): the throttles
        # failed open, as designed (project/api/throttling.py), so nothing was counted here.
        pytest.skip("Redis too slow on this machine: throttles failed open")
    assert statuses == [200, 200, 429]
    assert reads == [200, 200, 200]


def test_the_export_is_throttled_by_its_own_scope_only():
    view = ExecutionExportViewSet()

    assert view.throttle_scope == "export"
    assert [type(throttle).__name__ for throttle in view.get_throttles()] == ["AnonRateThrottle", "ExportThrottle"]
    assert SimpleRateThrottle.THROTTLE_RATES["export"] == settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["export"]


def test_options_describes_the_export_in_json_whatever_file_type_was_named(finished, client_for):
    client = client_for(member(finished.job.tenant, Role.VIEWER))
    url = reverse("recon-export-execution", kwargs={"pk": finished.pk})

    response = client.options(f"{url}?as=csv&format=csv")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
