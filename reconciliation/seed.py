"""Demo data for reconciliation: a tenant, a bank-vs-ledger job, records of both sides, one run.

`seed_demo --reconciliation N` brings the demo job up to N records (both sides together) through
the real ingest, then runs the matcher once, so a newcomer opening the admin after `make run`
finds automatic matches, suggestions to review and exceptions to resolve. Deterministic (fixed
seed) and idempotent: records already there are unchanged, and an executed job is not re-run.
"""

import csv
import io
import random
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db import transaction

from reconciliation.ingest.records import csv_stream_from_text, records_ingest
from reconciliation.models import Execution, ReconciliationJob, Record, Tenant, TenantMembership

DEMO_TENANT_SLUG = "demo"
DEMO_JOB_NAME = "Bank statement vs general ledger"
COUNTERPARTIES = [
    "Acme Industries GmbH", "Northwind Traders Ltd", "Blue Harbor Logistics B.V.", "Orion Signal S.A.",
    "Meadow Tide Holdings Ltd", "Silver Forge Labs Oy", "Pacific Hall Transport Inc.", "Lake Moor Security SAS",
]  # fmt: skip
HEADER = ["external_id", "amount", "currency", "booked_on", "reference", "counterparty", "description"]


def _demo_rows(pairs: int) -> tuple[list[list[str]], list[list[str]]]:
    """Left and right rows: mostly exact pairs, some with drift or a typo, a few split payments
    and a few records with no counterpart."""
    rng = random.Random(7)  # noqa: S311  (demo data, deterministic on purpose)
    left, right = [], []
    start = date(2026, 1, 5)
    for i in range(pairs):
        amount = Decimal(rng.randint(5_000, 2_500_000)) / 100
        day = start + timedelta(days=i % 300)
        reference = f"INV-2026-{100000 + i}"
        counterparty = COUNTERPARTIES[i % len(COUNTERPARTIES)]
        left.append([f"BANK-{i:06d}", f"{amount}", "EUR", f"{day}", reference, counterparty, "Incoming transfer"])
        kind = i % 20
        if kind < 14:  # exact, the ledger formats the reference its own way
            right.append([f"GL-{i:06d}", f"{amount}", "EUR", f"{day + timedelta(days=1)}", reference.lower(),
                          counterparty.upper(), "Invoice paid"])  # fmt: skip
        elif kind < 16:  # drift and a typo in the reference: a confident tolerance match
            typo = reference[:-2] + reference[-1] + reference[-2]
            right.append([f"GL-{i:06d}", f"{amount + Decimal('0.40')}", "EUR", f"{day + timedelta(days=2)}", typo,
                          counterparty, "Invoice paid, bank fee"])  # fmt: skip
        elif kind == 16:  # no reference, a short name: plausible, so suggested to a person
            right.append([f"GL-{i:06d}", f"{amount + Decimal('0.40')}", "EUR", f"{day + timedelta(days=2)}", "",
                          counterparty.split()[0], "Payment"])  # fmt: skip
        elif kind == 17:  # one payment for two invoices
            first = (amount / 3).quantize(Decimal("0.01"))
            for part, value in (("a", first), ("b", amount - first)):
                right.append([f"GL-{i:06d}{part}", f"{value}", "EUR", f"{day}", reference, counterparty, "Part"])
        elif kind == 18:  # a bank line nobody booked
            pass
        else:  # a ledger entry with an amount far off: an exception to look at
            right.append([f"GL-{i:06d}", f"{amount * 2}", "EUR", f"{day}", reference, counterparty, "Booked twice?"])
    return left, right


def _csv(rows: list[list[str]]) -> io.BytesIO:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(HEADER)
    writer.writerows(rows)
    return csv_stream_from_text(text.getvalue())


def seed_reconciliation(count: int, progress: Callable[[int], None]) -> int:
    """Bring the demo job up to about `count` records (both sides), then run it once."""
    from reconciliation.engine.jobs import run_execution

    with transaction.atomic():
        tenant, _ = Tenant.objects.get_or_create(slug=DEMO_TENANT_SLUG, defaults={"name": "Demo Ltd"})
        job, _ = ReconciliationJob.objects.get_or_create(tenant=tenant, name=DEMO_JOB_NAME)
        # Superusers can try the API on the demo tenant.
        for user in get_user_model().objects.filter(is_superuser=True):
            TenantMembership.objects.get_or_create(tenant=tenant, user=user, defaults={"role": "admin"})
    before = Record.objects.filter(job=job).count()
    left, right = _demo_rows(pairs=max(count // 2, 0))
    inserted = 0
    for side, rows in (("left", left), ("right", right)):
        inserted += records_ingest(job=job, csv_stream=_csv(rows), side=side).inserted
    progress(before + inserted)
    if inserted and not Execution.objects.filter(job=job).exists():
        execution = Execution.objects.create(tenant=tenant, job=job)
        run_execution.run_now({"execution_id": execution.pk})
    return inserted
