"""Scheduled runs: a job's crontab, beat's dispatcher through the job runner, skipped when no
new records came since the last run."""

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from project.models import ActivityLog, JobRun, OutboxMessage
from project.schedules import SCHEDULES
from reconciliation import jobs
from reconciliation.engine.schedule import next_run_after
from reconciliation.models import Execution, TenantMembership
from reconciliation.workflow.models import JobSchedule, ScheduledRun
from tests.reconciliation.factories import JobFactory, load, member

pytestmark = pytest.mark.django_db
Role = TenantMembership.Role


@pytest.mark.parametrize(
    ("crontab", "moment", "expected"),
    [
        ("0 6 * * *", datetime(2026, 3, 10, 5, 0, tzinfo=UTC), datetime(2026, 3, 10, 6, 0, tzinfo=UTC)),
        ("0 6 * * *", datetime(2026, 3, 10, 6, 0, tzinfo=UTC), datetime(2026, 3, 11, 6, 0, tzinfo=UTC)),
        ("*/15 * * * *", datetime(2026, 3, 10, 6, 7, 30, tzinfo=UTC), datetime(2026, 3, 10, 6, 15, tzinfo=UTC)),
        ("30 2 1 * *", datetime(2026, 3, 10, 0, 0, tzinfo=UTC), datetime(2026, 4, 1, 2, 30, tzinfo=UTC)),
        ("0 7 * * 1-5", datetime(2026, 3, 13, 8, 0, tzinfo=UTC), datetime(2026, 3, 16, 7, 0, tzinfo=UTC)),  # Fri->Mon
    ],
)
def test_next_run_is_the_first_slot_strictly_after(crontab, moment, expected):
    assert next_run_after(crontab, moment) == expected


def test_the_dispatcher_is_one_marked_beat_schedule_every_minute():
    (entry,) = [schedule for schedule in SCHEDULES if schedule.job == "reconciliation.run_due_schedules"]
    assert entry.crontab == {"minute": "*"}
    assert entry.queue == "reconciliation"


def test_an_operator_schedules_a_job_and_sees_the_next_run(client_for):
    job = JobFactory()
    client = client_for(member(job.tenant, Role.OPERATOR))

    response = client.post(reverse("recon-schedule-list"), {"job": job.pk, "crontab": "0  6 * * 1-5"}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["crontab"] == "0 6 * * 1-5"
    next_run = datetime.fromisoformat(body["next_run_at"])
    assert next_run > timezone.now() and (next_run.hour, next_run.minute) == (6, 0) and next_run.weekday() < 5
    assert ActivityLog.objects.get(action="schedule_create").entity_id == str(job.pk)


@pytest.mark.parametrize(
    "crontab", ["0 6 * *", "61 * * * *", "0 6 * * funday", "every day", "-1 * * * *", "1,,2 * * * *", "*/0 * * * *"]
)
def test_a_bad_crontab_is_a_400_naming_it(crontab, client_for):
    job = JobFactory()
    response = client_for(member(job.tenant, Role.OPERATOR)).post(
        reverse("recon-schedule-list"), {"job": job.pk, "crontab": crontab}, format="json"
    )

    assert response.status_code == 400
    assert not JobSchedule.objects.exists()


def due(job, crontab: str = "*/5 * * * *") -> JobSchedule:
    return JobSchedule.objects.create(
        job=job, tenant=job.tenant, crontab=crontab, next_run_at=timezone.now() - timedelta(minutes=1)
    )


def dispatch() -> dict:
    return jobs.run_due_schedules.run_now({})


def finish_executions(job) -> None:
    for execution_id in Execution.objects.filter(job=job, status="queued").values_list("id", flat=True):
        jobs.run_execution.run_now({"execution_id": execution_id})


def test_a_due_schedule_starts_a_run_then_skips_when_nothing_new_came():
    job = JobFactory()
    load(job, "left", [("L1", "10.00", "EUR", "2026-03-10")])
    schedule = due(job)

    first = dispatch()
    finish_executions(job)
    JobSchedule.objects.filter(job=job).update(next_run_at=timezone.now() - timedelta(seconds=1))
    second = dispatch()

    assert first["started"] == [job.pk] and second["skipped"] == [job.pk]
    runs = list(ScheduledRun.objects.filter(job=job).order_by("id").values_list("outcome", "execution_id"))
    execution = Execution.objects.get(job=job)
    assert runs == [("started", execution.pk), ("skipped", None)]
    assert "no new records" in ScheduledRun.objects.filter(job=job).latest("id").reason
    schedule.refresh_from_db()
    assert (schedule.last_outcome, schedule.last_execution_id) == ("skipped", execution.pk)
    assert schedule.next_run_at > timezone.now()
    # Through the job runner: one recorded JobRun per dispatch; the execution goes through the outbox.
    assert JobRun.objects.filter(name="reconciliation.run_due_schedules", status="succeeded").count() == 2
    assert OutboxMessage.objects.filter(job="reconciliation.run_execution").exists()


def test_new_records_since_the_last_run_start_another_run():
    job = JobFactory()
    load(job, "left", [("L1", "10.00", "EUR", "2026-03-10")])
    due(job)
    dispatch()
    finish_executions(job)
    load(job, "right", [("R1", "10.00", "EUR", "2026-03-10")])
    JobSchedule.objects.filter(job=job).update(next_run_at=timezone.now() - timedelta(seconds=1))

    assert dispatch()["started"] == [job.pk]
    assert Execution.objects.filter(job=job).count() == 2


def test_a_run_still_going_or_an_inactive_job_is_recorded_not_run():
    busy, inactive = JobFactory(), JobFactory(is_active=False)
    Execution.objects.create(tenant_id=busy.tenant_id, job=busy, status="running")
    due(busy), due(inactive)

    result = dispatch()

    assert (result["skipped"], result["failed"]) == ([busy.pk], [inactive.pk])
    assert Execution.objects.filter(job=busy).count() == 1 and not Execution.objects.filter(job=inactive).exists()
    assert JobSchedule.objects.get(job=inactive).last_reason == "the job is inactive"


def test_schedules_not_due_or_disabled_are_left_alone():
    job, disabled = JobFactory(), JobFactory()
    JobSchedule.objects.create(job=job, tenant=job.tenant, crontab="0 6 * * *",
                               next_run_at=timezone.now() + timedelta(hours=1))  # fmt: skip
    JobSchedule.objects.create(job=disabled, tenant=disabled.tenant, crontab="0 6 * * *", is_enabled=False,
                               next_run_at=timezone.now() - timedelta(hours=1))  # fmt: skip

    assert dispatch()["due"] == 0
    assert not ScheduledRun.objects.exists()


def test_run_history_is_listed_newest_first(client_for):
    job = JobFactory()
    load(job, "left", [("L1", "10.00", "EUR", "2026-03-10")])
    due(job)
    dispatch()
    finish_executions(job)
    JobSchedule.objects.filter(job=job).update(next_run_at=timezone.now() - timedelta(seconds=1))
    dispatch()
    client = client_for(member(job.tenant, Role.VIEWER))

    body = client.get(reverse("recon-schedule-runs", kwargs={"pk": job.schedule.pk})).json()

    assert [row["outcome"] for row in body["results"]] == ["skipped", "started"]


def test_schedule_and_period_lists_cost_the_same_queries_for_one_row_or_many(client_for, django_assert_num_queries):
    from reconciliation.workflow.models import Period

    first = JobFactory()
    client = client_for(member(first.tenant, Role.VIEWER))
    for job in [first, *(JobFactory(tenant=first.tenant) for _ in range(4))]:
        JobSchedule.objects.create(job=job, tenant=job.tenant, crontab="0 6 * * *")
        Period.objects.create(job=job, tenant=job.tenant, starts_on="2026-03-01", ends_on="2026-03-31")
    client.get(reverse("recon-schedule-list"))

    with django_assert_num_queries(4):  # session, user, memberships, the page
        schedules = client.get(reverse("recon-schedule-list"))
    with django_assert_num_queries(4):
        periods = client.get(reverse("recon-period-list"))

    assert len(schedules.json()["results"]) == 5 and len(periods.json()["results"]) == 5
