"""Factories and loaders for reconciliation tests: records go in through the real ingest."""

import factory

from reconciliation.ingest.records import csv_stream_from_text, records_ingest
from reconciliation.models import ReconciliationJob, Tenant, TenantMembership
from tests.factories import UserFactory

CSV_HEADER = "external_id,amount,currency,booked_on,reference,counterparty,description"


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant

    name = factory.Sequence(lambda n: f"Tenant {n}")
    slug = factory.Sequence(lambda n: f"tenant-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TenantMembership

    tenant = factory.SubFactory(TenantFactory)
    user = factory.SubFactory(UserFactory)
    role = TenantMembership.Role.OPERATOR


class JobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ReconciliationJob

    tenant = factory.SubFactory(TenantFactory)
    name = factory.Sequence(lambda n: f"Bank vs ledger {n}")
    rules = factory.LazyFunction(dict)


def member(tenant, role=TenantMembership.Role.OPERATOR):
    """A new user with `role` in `tenant`."""
    return MembershipFactory(tenant=tenant, role=role).user


def load(job, side: str, rows: list[tuple]) -> None:
    """Ingest rows (external_id, amount, currency, booked_on, reference, counterparty[, description])."""
    lines = [CSV_HEADER]
    for row in rows:
        padded = list(row) + [""] * (7 - len(row))
        lines.append(",".join(f'"{value}"' for value in padded))
    records_ingest(job=job, csv_stream=csv_stream_from_text("\n".join(lines) + "\n"), side=side)
