"""The workflow in the admin: schedules show next and last run with the outcome; the exceptions
queue shows each exception's age bucket and assignee and filters by them."""

import html
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from project.models import ActivityLog
from reconciliation import jobs
from reconciliation.models import Execution, ReconciliationException
from reconciliation.workflow.models import JobSchedule
from tests.conftest import grant
from tests.factories import UserFactory
from tests.reconciliation.factories import JobFactory, load

pytestmark = pytest.mark.django_db
EXCEPTIONS = reverse("admin:reconciliation_exceptions_queue")


def text(response) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


def test_schedule_list_shows_next_and_last_run_and_outcome(client):
    job = JobFactory(is_active=False)
    JobSchedule.objects.create(job=job, tenant=job.tenant, crontab="*/5 * * * *",
                               next_run_at=timezone.now() - timedelta(minutes=1))  # fmt: skip
    jobs.run_due_schedules.run_now({})
    client.force_login(grant(UserFactory(is_staff=True), "reconciliation.view_jobschedule"))

    page = text(client.get(reverse("admin:reconciliation_jobschedule_changelist")))

    assert "*/5 * * * *" in page
    assert "Failed" in page and "the job is inactive" in page, page


def test_a_schedule_made_in_the_admin_goes_through_the_service(client):
    job = JobFactory()
    client.force_login(grant(UserFactory(is_staff=True), "reconciliation.add_jobschedule",
                             "reconciliation.view_jobschedule"))  # fmt: skip

    bad = client.post(reverse("admin:reconciliation_jobschedule_add"), {"job": job.pk, "crontab": "0 25 * * *"})
    good = client.post(reverse("admin:reconciliation_jobschedule_add"),
                       {"job": job.pk, "crontab": "0 6 * * *", "is_enabled": "on"})  # fmt: skip

    assert bad.status_code == 200 and "Invalid crontab" in text(bad)
    assert good.status_code == 302
    schedule = JobSchedule.objects.get(job=job)
    assert schedule.next_run_at is not None and schedule.next_run_at > timezone.now()
    assert ActivityLog.objects.filter(action="schedule_create", entity_id=str(job.pk)).exists()


def test_exceptions_queue_shows_age_bucket_and_assignee_and_filters_by_age(client):
    job = JobFactory()
    load(job, "left", [("L1", "10.00", "EUR", "2026-03-10"), ("L2", "20.00", "EUR", "2026-03-10")])
    execution = Execution.objects.create(tenant_id=job.tenant_id, job=job)
    jobs.run_execution.run_now({"execution_id": execution.pk})
    fresh, old = ReconciliationException.objects.filter(job_id=job.pk).order_by("id")
    ReconciliationException.objects.filter(id=old.id).update(
        created_at=timezone.now() - timedelta(days=10), assigned_to_id=42
    )
    client.force_login(grant(UserFactory(is_staff=True), "reconciliation.view_execution"))

    everything = client.get(EXCEPTIONS)
    only_old = client.get(EXCEPTIONS, {"age": "8-30"})

    rows = re.findall(r'data-exception="(\d+)"', everything.content.decode())
    assert sorted(map(int, rows)) == sorted([fresh.id, old.id])
    assert "8-30" in text(everything) and "0-2" in text(everything) and "user 42" in text(everything)
    assert re.findall(r'data-exception="(\d+)"', only_old.content.decode()) == [str(old.id)]
