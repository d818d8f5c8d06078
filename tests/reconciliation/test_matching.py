"""The matcher: each pass, thresholds, ambiguity, never matching a record twice, crash and resume."""

from decimal import Decimal

import pytest
from django.db import connection

from reconciliation.engine import jobs
from reconciliation.engine import passes as matching
from reconciliation.engine import run as services
from reconciliation.models import Execution, Match, MatchedRecord, ReconciliationException, Record, Report
from reconciliation.review import services as review_services
from tests.reconciliation.factories import JobFactory, load

pytestmark = pytest.mark.django_db


def run(job, *, dry_run: bool = False) -> Execution:
    execution = Execution.objects.create(tenant_id=job.tenant_id, job=job, dry_run=dry_run)
    jobs.run_execution.run_now({"execution_id": execution.pk})
    execution.refresh_from_db()
    return execution


def matches_by_external_ids(job) -> set[tuple]:
    """Every live match as (left external ids, right external ids, pass, status, confidence)."""
    external = dict(Record.objects.filter(job=job).values_list("id", "external_id"))
    return {
        (
            tuple(sorted(external[i] for i in m.left_ids)),
            tuple(sorted(external[i] for i in m.right_ids)),
            m.pass_name,
            m.status,
            m.confidence,
        )
        for m in Match.objects.filter(job_id=job.pk).exclude(status=Match.Status.REJECTED)
    }


def pairs(job) -> set[tuple]:
    return {(left, right) for left, right, *_ in matches_by_external_ids(job)}


def test_exact_pass_matches_same_amount_currency_and_normalized_reference_within_the_window():
    job = JobFactory(rules={"date_window_days": 2})
    load(
        job,
        "left",
        [
            ("L1", "100.00", "EUR", "2026-03-01", "INV-2026-001"),
            ("L2", "100.00", "EUR", "2026-03-01", "INV-2026-002"),
            ("L3", "100.00", "EUR", "2026-03-01", "INV-2026-003"),
        ],
    )
    load(
        job,
        "right",
        [
            ("R1", "100.0000", "EUR", "2026-03-03", "ref: inv 2026/001"),  # 2 days: inside
            ("R2", "100.00", "EUR", "2026-03-04", "INV2026002"),  # 3 days: outside
            ("R3", "100.00", "USD", "2026-03-01", "INV-2026-003"),
        ],
    )  # other currency

    execution = run(job)

    assert execution.status == Execution.Status.SUCCEEDED
    assert matches_by_external_ids(job) == {(("L1",), ("R1",), "exact", "auto", Decimal("1.0000"))}
    assert execution.summary["passes"]["exact"]["auto"] == 1


def test_tolerance_pass_scores_drift_and_text_and_applies_the_thresholds():
    job = JobFactory(rules={"auto_threshold": 0.76, "review_threshold": 0.5, "passes": {"group": {"enabled": False}}})
    load(
        job,
        "left",
        [
            ("L1", "1000.00", "EUR", "2026-03-10", "INV-77120", "Acme Industries GmbH"),
            ("L2", "500.00", "EUR", "2026-03-10", "", "Northwind Traders"),
            ("L3", "80.00", "EUR", "2026-03-10", "", ""),
        ],
    )
    load(
        job,
        "right",
        [
            ("R1", "1000.80", "EUR", "2026-03-11", "INV-77121", "ACME INDUSTRIES GMBH"),  # typo
            ("R2", "502.00", "EUR", "2026-03-12", "", "Northwind Trading"),
            ("R3", "80.00", "EUR", "2026-03-10", "", ""),
        ],
    )  # amount alone: capped

    run(job)

    found = {
        (left, right): (pass_name, status, confidence)
        for left, right, pass_name, status, confidence in matches_by_external_ids(job)
    }
    assert found[("L1",), ("R1",)][:2] == ("tolerance", "auto")
    assert found[("L2",), ("R2",)][:2] == ("tolerance", "suggested")
    assert found[("L3",), ("R3",)] == ("tolerance", "suggested", Decimal(str(matching.NO_TEXT_EVIDENCE_CAP)))


def test_amount_outside_the_drift_is_not_matched_and_says_why():
    job = JobFactory(rules={"passes": {"tolerance": {"amount_abs": "1.00", "amount_pct": 0.1}}})
    load(job, "left", [("L1", "1000.00", "EUR", "2026-03-10", "INV-1", "Acme")])
    load(job, "right", [("R1", "1010.00", "EUR", "2026-03-10", "INV-1", "Acme")])

    execution = run(job)

    assert pairs(job) == set()
    reasons = set(ReconciliationException.objects.filter(job_id=job.pk).values_list("side", "reason"))
    assert reasons == {("left", "amount_outside_drift"), ("right", "amount_outside_drift")}
    assert execution.summary["open_by_reason"] == {"amount_outside_drift": 2}


def test_unmatched_reasons_tell_no_candidate_from_low_confidence():
    job = JobFactory(rules={"review_threshold": 0.8, "auto_threshold": 0.9})
    load(
        job,
        "left",
        [
            ("L1", "42.00", "EUR", "2026-03-10", "", ""),  # amount-only pair: capped at 0.75
            ("L2", "999.00", "EUR", "2026-03-10", "INV-9", "X"),
        ],
    )
    load(job, "right", [("R1", "42.50", "EUR", "2026-03-13", "", "")])

    run(job)

    reasons = dict(ReconciliationException.objects.filter(job_id=job.pk).values_list("record_id", "reason"))
    by_external = {Record.objects.get(pk=record_id).external_id: reason for record_id, reason in reasons.items()}
    assert by_external == {"L1": "low_confidence", "R1": "low_confidence", "L2": "no_candidate"}


def test_group_pass_matches_one_left_to_the_right_records_that_sum_to_it():
    job = JobFactory()
    load(
        job,
        "left",
        [
            ("L1", "300.00", "EUR", "2026-03-10", "INV-300", "Delta"),
            ("L2", "50.00", "EUR", "2026-03-10", "PAY-9", "Echo"),
            ("L3", "70.00", "EUR", "2026-03-11", "PAY-9", "Echo"),
        ],
    )
    load(
        job,
        "right",
        [
            ("R1", "100.00", "EUR", "2026-03-10", "INV-300", "Delta"),
            ("R2", "150.00", "EUR", "2026-03-11", "inv 300", "Delta"),
            ("R3", "50.00", "EUR", "2026-03-12", "INV300", "Delta"),
            ("R4", "120.00", "EUR", "2026-03-10", "PAY-9", "Echo"),
        ],
    )

    execution = run(job)

    found = {(left, right): (pass_name, status) for left, right, pass_name, status, _ in matches_by_external_ids(job)}
    assert found == {
        (("L1",), ("R1", "R2", "R3")): ("group", "auto"),  # one-to-many
        (("L2", "L3"), ("R4",)): ("group", "auto"),  # many-to-one
    }
    assert execution.summary["passes"]["group_one_to_many"]["records"] == 4
    assert execution.summary["passes"]["group_many_to_one"]["records"] == 3


def test_a_group_whose_members_another_group_wants_too_is_ambiguous_and_left_open():
    job = JobFactory()
    load(job, "left", [("L1", "30.00", "EUR", "2026-03-10", "X-1"), ("L2", "30.00", "EUR", "2026-03-11", "X-1")])
    load(job, "right", [("R1", "10.00", "EUR", "2026-03-10", "X-1"), ("R2", "20.00", "EUR", "2026-03-10", "X-1")])

    run(job)

    assert pairs(job) == set()


def test_two_equally_good_candidates_make_a_suggestion_never_an_automatic_match():
    job = JobFactory()
    load(job, "left", [("L1", "250.00", "EUR", "2026-03-10", "INV-5", "Beta")])
    load(
        job,
        "right",
        [
            ("R1", "250.00", "EUR", "2026-03-10", "INV-5", "Beta"),
            ("R2", "250.00", "EUR", "2026-03-10", "INV-5", "Beta"),
        ],
    )

    run(job)

    # Greedy picks by the deterministic tie-break (lowest id); a person confirms or rejects it.
    assert matches_by_external_ids(job) == {(("L1",), ("R1",), "exact", "suggested", Decimal("1.0000"))}
    assert ReconciliationException.objects.get(job_id=job.pk).reason == "ambiguous"


def test_greedy_assignment_gives_each_record_its_best_available_partner():
    job = JobFactory(
        rules={
            "auto_threshold": 0.5,
            "review_threshold": 0.1,
            "passes": {"exact": {"enabled": False}, "group": {"enabled": False}},
        }
    )
    # L1 is best for both R1 and R2; R1 prefers L1 most; L2 can only have R2.
    load(
        job,
        "left",
        [
            ("L1", "100.00", "EUR", "2026-03-10", "AAA111", "Acme"),
            ("L2", "100.40", "EUR", "2026-03-12", "AAA112", "Acme"),
        ],
    )
    load(
        job,
        "right",
        [
            ("R1", "100.00", "EUR", "2026-03-10", "AAA111", "Acme"),
            ("R2", "100.30", "EUR", "2026-03-11", "AAA112", "Acme"),
        ],
    )

    run(job)

    assert pairs(job) == {(("L1",), ("R1",)), (("L2",), ("R2",))}


def test_no_record_is_ever_in_two_live_matches():
    job = JobFactory(rules={"review_threshold": 0.1})
    rows = [
        (f"E{i}", f"{100 + i % 3}.00", "EUR", f"2026-03-{10 + i % 4:02d}", f"R-{i % 5}", "Same Co") for i in range(30)
    ]
    load(job, "left", rows)
    load(
        job,
        "right",
        [(f"F{i}", amount, currency, day, ref, cp) for i, (_, amount, currency, day, ref, cp) in enumerate(rows)],
    )

    run(job)

    live = Match.objects.filter(job_id=job.pk).exclude(status=Match.Status.REJECTED)
    record_ids = [record_id for m in live for record_id in [*m.left_ids, *m.right_ids]]
    assert len(record_ids) == len(set(record_ids))
    links = MatchedRecord.objects.filter(record__job=job).values_list("record_id", "match_id")
    assert set(links) == {(i, m.id) for m in live for i in [*m.left_ids, *m.right_ids]}


def test_a_rerun_matches_nothing_twice_and_records_no_duplicate_exceptions():
    job = JobFactory()
    load(job, "left", [("L1", "10.00", "EUR", "2026-03-10", "A"), ("L2", "77.00", "EUR", "2026-03-10", "Q")])
    load(job, "right", [("R1", "10.00", "EUR", "2026-03-10", "A")])
    run(job)
    before = matches_by_external_ids(job)

    second = run(job)

    assert matches_by_external_ids(job) == before
    assert ReconciliationException.objects.filter(job_id=job.pk, resolved_at__isnull=True).count() == 1
    assert second.summary["matches"] == {"auto": 0, "suggested": 0}


def test_dry_run_reports_what_would_match_and_writes_nothing():
    job = JobFactory()
    load(job, "left", [("L1", "10.00", "EUR", "2026-03-10", "A"), ("L2", "77.00", "EUR", "2026-03-10", "Q")])
    load(job, "right", [("R1", "10.00", "EUR", "2026-03-10", "A")])

    execution = run(job, dry_run=True)

    assert execution.status == Execution.Status.SUCCEEDED
    assert execution.summary["dry_run"] is True
    assert execution.summary["passes"]["exact"]["auto"] == 1
    assert execution.summary["open_by_reason"] == {"no_candidate": 1}  # what would be left: L2
    assert not Match.objects.filter(job_id=job.pk).exists()
    assert not ReconciliationException.objects.filter(job_id=job.pk).exists()
    assert not MatchedRecord.objects.filter(record__job=job).exists()
    assert not Report.objects.filter(execution=execution).exists()


class SimulatedWorkerDeath(BaseException):
    """Not an Exception: like a SIGKILL, nothing in the job gets to mark the execution failed."""


def test_an_execution_killed_between_passes_resumes_to_the_same_result(monkeypatch):
    rows_left = [
        ("L1", "100.00", "EUR", "2026-03-10", "INV-1", "Acme"),
        ("L2", "200.00", "EUR", "2026-03-10", "INV-2", "Beta"),
        ("L3", "300.00", "EUR", "2026-03-10", "INV-3", "Gamma"),
        ("L4", "99.00", "EUR", "2026-03-10", "ZZ", "Nobody"),
    ]
    rows_right = [
        ("R1", "100.00", "EUR", "2026-03-11", "INV-1", "Acme"),
        ("R2", "200.50", "EUR", "2026-03-10", "INV-2", "Beta"),
        ("R3a", "100.00", "EUR", "2026-03-10", "INV-3", "Gamma"),
        ("R3b", "200.00", "EUR", "2026-03-10", "INV-3", "Gamma"),
    ]
    uninterrupted, interrupted = JobFactory(), JobFactory()
    for job in (uninterrupted, interrupted):
        load(job, "left", rows_left)
        load(job, "right", rows_right)
    run(uninterrupted)

    def die_after_exact(execution, name):
        if name == "exact":
            raise SimulatedWorkerDeath

    monkeypatch.setattr(services, "after_pass", die_after_exact)
    execution = Execution.objects.create(tenant_id=interrupted.tenant_id, job=interrupted)
    with pytest.raises(SimulatedWorkerDeath):
        jobs.run_execution.run_now({"execution_id": execution.pk})
    execution.refresh_from_db()
    assert (execution.status, execution.passes_done) == (Execution.Status.RUNNING, ["exact"])
    monkeypatch.undo()

    jobs.run_execution.run_now({"execution_id": execution.pk})  # the retry

    execution.refresh_from_db()
    assert execution.status == Execution.Status.SUCCEEDED
    assert execution.attempts == 2
    assert execution.passes_done == list(matching.PASSES)
    assert matches_by_external_ids(interrupted) == matches_by_external_ids(uninterrupted)
    assert len(matches_by_external_ids(interrupted)) == 3


def test_a_pass_that_finds_records_taken_meanwhile_is_redone_from_the_database(monkeypatch):
    job = JobFactory()
    load(job, "left", [("L1", "10.00", "EUR", "2026-03-10", "A"), ("L2", "20.00", "EUR", "2026-03-10", "B")])
    load(job, "right", [("R1", "10.00", "EUR", "2026-03-10", "A"), ("R2", "20.00", "EUR", "2026-03-10", "B")])
    original_load = matching.load_working_set
    loads = []

    def load_then_someone_matches_by_hand(job_id):
        original_load(job_id)
        loads.append(job_id)
        if len(loads) == 1:  # after the matcher read the open records, a person takes L1 and R1
            left, right = (Record.objects.get(job=job, external_id=e).pk for e in ("L1", "R1"))
            review_services.match_manual(left_ids=[left], right_ids=[right], tenant_ids=[job.tenant_id])

    monkeypatch.setattr(services, "load_working_set", load_then_someone_matches_by_hand)

    run(job)

    assert len(loads) == 2
    assert matches_by_external_ids(job) == {
        (("L1",), ("R1",), "manual", "confirmed", Decimal("1.0000")),
        (("L2",), ("R2",), "exact", "auto", Decimal("1.0000")),
    }


def test_similarity_falls_back_to_word_overlap_without_pg_trgm():
    with connection.cursor() as cursor:
        sql = matching._similarity("'acme industries gmbh'", "'acme industries'", has_trigram=False)
        cursor.execute(f"SELECT {sql}")
        assert cursor.fetchone()[0] == pytest.approx(2 / 3)


def test_a_failed_execution_is_marked_failed_with_its_error(monkeypatch):
    job = JobFactory()
    load(job, "left", [("L1", "10.00", "EUR", "2026-03-10", "A")])

    def broken(ctx, name):
        raise ValueError("boom")

    monkeypatch.setattr(services, "run_pass", broken)
    execution = Execution.objects.create(tenant_id=job.tenant_id, job=job)
    with pytest.raises(ValueError):
        jobs.run_execution.run_now({"execution_id": execution.pk})

    execution.refresh_from_db()
    assert execution.status == Execution.Status.FAILED
    assert "boom" in execution.error


def test_a_record_whose_only_neighbour_in_drift_belongs_to_another_pair_has_no_candidate():
    job = JobFactory()
    load(job, "left", [("L1", "100.00", "EUR", "2026-03-10", "INV-1", "Acme"),
                       ("L2", "100.10", "EUR", "2026-03-10", "ZZZ-9", "Nobody")])  # fmt: skip
    load(job, "right", [("R1", "100.00", "EUR", "2026-03-10", "INV-1", "Acme")])

    run(job)

    assert pairs(job) == {(("L1",), ("R1",))}
    exception = ReconciliationException.objects.get(job_id=job.pk)
    assert (Record.objects.get(pk=exception.record_id).external_id, exception.reason) == ("L2", "no_candidate")
