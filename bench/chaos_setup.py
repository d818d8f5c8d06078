"""Objects the chaos run needs, created in the chaos stack's database; prints them as JSON.

Run by bench/chaos.py (with the chaos stack's DATABASE_URL/REDIS_URL) after `migrate`:
a superuser with an API token (what `manage.py create_api_token` mints), a project for task
creates, a tenant the user administers, a job that takes small JSON ingests under load, small jobs
to run while Redis is paused, and two reconciliation jobs that get the same big data set (one run
clean, one whose worker is killed) so their matches can be compared.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import django

django.setup()

from io import StringIO  # noqa: E402

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402

from reconciliation.models import ReconciliationJob, Tenant, TenantMembership  # noqa: E402
from tasks.models import Project  # noqa: E402

REDIS_PAUSE_RUN_JOBS = 3


def main() -> None:
    user, created = get_user_model().objects.get_or_create(
        username="chaos", defaults={"is_staff": True, "is_superuser": True, "email": "chaos@example.com"}
    )
    if created:
        user.set_unusable_password()
        user.save()
    token_out = StringIO()
    call_command("create_api_token", "chaos", stdout=token_out)
    project, _ = Project.objects.get_or_create(name="chaos", defaults={"owner": user})
    tenant, _ = Tenant.objects.get_or_create(slug="chaos", defaults={"name": "Chaos"})
    TenantMembership.objects.update_or_create(tenant=tenant, user=user, defaults={"role": TenantMembership.Role.ADMIN})

    def job(name: str) -> int:
        return ReconciliationJob.objects.create(tenant=tenant, name=name).pk

    print(
        json.dumps(
            {
                "token": token_out.getvalue().strip(),
                "project_id": project.pk,
                "tenant_id": tenant.pk,
                "load_job_id": job("chaos load: small ingests"),
                "redis_run_job_ids": [job(f"chaos redis pause run {n}") for n in range(REDIS_PAUSE_RUN_JOBS)],
                "clean_job_id": job("chaos clean run"),
                "kill_job_id": job("chaos killed run"),
            }
        )
    )


if __name__ == "__main__":
    main()
