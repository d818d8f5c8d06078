"""The demo data: real records through the ingest, one run, and nothing doubled when run again."""

import pytest
from django.core.management import call_command

from reconciliation.models import Execution, Match, ReconciliationException, ReconciliationJob, Record, TenantMembership
from reconciliation.seed import DEMO_JOB_NAME
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_seed_demo_loads_a_matched_job_with_suggestions_and_exceptions_once():
    admin = UserFactory(is_superuser=True, is_staff=True)

    call_command("seed_demo", reconciliation=400, verbosity=0)
    call_command("seed_demo", reconciliation=400, verbosity=0)

    job = ReconciliationJob.objects.get(name=DEMO_JOB_NAME)
    assert Record.objects.filter(job=job, side="left").count() == 200
    assert Execution.objects.filter(job=job, status="succeeded").count() == 1
    statuses = set(Match.objects.filter(job_id=job.pk).values_list("status", flat=True))
    assert statuses == {"auto", "suggested"}
    assert ReconciliationException.objects.filter(job_id=job.pk, resolved_at__isnull=True).exists()
    assert TenantMembership.objects.get(user=admin, tenant=job.tenant).role == "admin"
