"""The SQL matcher proposes exactly what the plain Python reference of its rules proposes
(bench/recon_reference.py), on small random record sets (issue 13, item 5).

The sets are drawn from small pools of amounts, days, references and counterparties so that
the interesting cases come up often: equal and drifted amounts, references equal after
normalization (case, separators, zero padding), typos, missing texts, twins (ambiguity), sums
of parts (groups), other currencies.
"""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import recon_reference as reference
from reconciliation.engine import jobs
from reconciliation.models import Execution, Match, Record
from tests.reconciliation.factories import JobFactory, load

# Committed examples: each execution creates and drops its working tables, and inside one
# test transaction hundreds of examples would hold every one of their locks to the end.
pytestmark = pytest.mark.django_db(transaction=True)

AMOUNTS = ["10.00", "10.40", "10.90", "20.00", "30.00", "50.00", "100.00", "100.30", "99.60", "250.00", "-40.00"]
REFERENCES = ["", "INV-1", "inv1", "INV-0001", "INV-2", "INV-12", "INV-21", "PO-7", "ref: PO 7", "INV-2026-0012"]
COUNTERPARTIES = ["", "Acme", "ACME GmbH", "Acme Industries", "Globex", "Globex Corp", "Initech"]
FIRST_DAY = date(2026, 3, 1)

record_fields = st.tuples(
    st.sampled_from(AMOUNTS),
    st.sampled_from(["EUR", "EUR", "EUR", "USD"]),
    st.integers(min_value=0, max_value=6),
    st.sampled_from(REFERENCES),
    st.sampled_from(COUNTERPARTIES),
)
rules_documents = st.fixed_dictionaries(
    {
        "date_window_days": st.integers(min_value=0, max_value=3),
        "auto_threshold": st.sampled_from([0.6, 0.7, 0.9]),
        "review_threshold": st.sampled_from([0.3, 0.4, 0.5]),
        "passes": st.fixed_dictionaries(
            {
                "tolerance": st.fixed_dictionaries(
                    {"require_evidence": st.booleans(), "amount_pct": st.sampled_from([0.0, 0.5, 2.0])}
                ),
                "group": st.fixed_dictionaries(
                    {"key": st.sampled_from(["reference", "counterparty"]), "max_group_size": st.integers(2, 4)}
                ),
            }
        ),
    }
)


def reference_rules(document: dict) -> reference.Rules:
    passes = document["passes"]
    return reference.Rules(
        date_window_days=document["date_window_days"],
        auto_threshold=document["auto_threshold"],
        review_threshold=document["review_threshold"],
        require_evidence=passes["tolerance"]["require_evidence"],
        amount_pct=passes["tolerance"]["amount_pct"],
        group_key=passes["group"]["key"],
        max_group_size=passes["group"]["max_group_size"],
    )


def sql_proposals(job) -> set:
    external = dict(Record.objects.filter(job=job).values_list("id", "external_id"))
    return {
        (tuple(sorted(external[i] for i in m.left_ids)), tuple(sorted(external[i] for i in m.right_ids)),
         m.pass_name, m.status, float(m.confidence))
        for m in Match.objects.filter(job_id=job.pk)
    }  # fmt: skip


def python_proposals(records: list[reference.Rec], rules: reference.Rules) -> set:
    external = {r.id: f"{r.side[0].upper()}{r.id}" for r in records}
    return {
        (tuple(sorted(external[i] for i in p.left_ids)), tuple(sorted(external[i] for i in p.right_ids)),
         p.pass_name, p.status, p.confidence)
        for p in reference.match(records, rules)
    }  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    left=st.lists(record_fields, max_size=6),
    right=st.lists(record_fields, max_size=6),
    rules_document=rules_documents,
)
def test_the_sql_matcher_proposes_what_the_python_reference_proposes(left, right, rules_document):
    records = [
        reference.Rec(id=number, side=side, currency=currency, amount=Decimal(amount),
                      booked_on=FIRST_DAY + timedelta(days=day), reference=ref, counterparty=cp)
        for side, rows in (("left", left), ("right", right))
        for number, (amount, currency, day, ref, cp) in enumerate(rows, start=1 if side == "left" else 101)
    ]  # fmt: skip
    job = JobFactory(rules=rules_document)
    for side in ("left", "right"):
        rows = [
            (f"{r.side[0].upper()}{r.id}", str(r.amount), r.currency, r.booked_on.isoformat(), r.reference,
             r.counterparty)
            for r in records if r.side == side
        ]  # fmt: skip
        if rows:
            load(job, side, rows)
    execution = Execution.objects.create(tenant_id=job.tenant_id, job=job)

    jobs.run_execution.run_now({"execution_id": execution.pk})

    expected = python_proposals(records, reference_rules(rules_document))
    found = sql_proposals(job)
    assert {p for p in found if p[3] == "auto"} == {p for p in expected if p[3] == "auto"}
    assert found == expected


def test_the_reference_normalizes_references_as_the_database_does():
    job = JobFactory()
    load(job, "left", [(f"L{i}", "1.00", "EUR", "2026-03-01", ref) for i, ref in enumerate(REFERENCES)])

    stored = dict(Record.objects.filter(job=job).values_list("reference", "reference_norm"))

    assert stored == {ref: reference.normalized_reference(ref) for ref in REFERENCES}
