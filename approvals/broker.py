"""The automation's queue in the broker: its name and how many runs wait in it."""

from django.conf import settings

from project.celery import app as celery_app

AUTOMATION_QUEUE = "automation"
# The job's name (approvals/jobs.py); its skipped JobRuns are what the skip notifications count.
AUTOMATION_JOB = "approvals.run_automation"
GUARD_SKIP_KEY = "guard_skip"  # in JobRun.result of a run the guard skipped


def automation_queue_length() -> int:
    # Bounded like the outbox's publish: "run now" must not hang on a stalled broker.
    timeout_s = settings.OUTBOX_PUBLISH_TIMEOUT_S
    options = {"socket_connect_timeout": timeout_s, "socket_timeout": timeout_s, "max_retries": 0}
    with celery_app.connection_for_write(connect_timeout=timeout_s, transport_options=options) as conn:
        return int(conn.default_channel.client.llen(AUTOMATION_QUEUE))
