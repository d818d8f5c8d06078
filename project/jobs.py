"""Platform Celery jobs."""

import logging
import threading
from dataclasses import asdict

from celery.signals import worker_ready

from project.api.authentication import delete_expired_api_tokens
from project.db.locks import lease
from project.jobrunner import JobSkipped, scheduled_job
from project.matviews import get_materialized_view, refresh_materialized_view
from project.partitions import maintain_all_partitions


@scheduled_job("project.maintain_partitions")
def maintain_partitions() -> dict:
    return {"tables": [asdict(report) for report in maintain_all_partitions()]}


# One job for every view (its schedules differ only in kwargs). Up to 4 views refresh at once;
# the per-view lease keeps two refreshes of the same view apart (the second would only wait on
# PostgreSQL's lock and then redo the same work).
@scheduled_job("project.refresh_materialized_view", concurrency=4, soft_time_limit_s=1200, time_limit_s=1260)
def refresh_materialized_view_job(name: str) -> dict:
    view = get_materialized_view(name)  # an unknown name fails the run (kwargs are admin-editable)
    with lease(f"matview:{view.name}") as acquired:
        if not acquired:
            raise JobSkipped(f"another refresh of {view.name} is running")
        refresh = refresh_materialized_view(view.name)
    return {"view": view.name, "duration_ms": refresh.duration_ms, "concurrently": refresh.concurrently}


@scheduled_job("project.delete_expired_api_tokens")
def delete_expired_api_tokens_job() -> dict:
    # Request authentication checks only the presented token (project/api/authentication.py).
    return {"deleted": delete_expired_api_tokens()}


@scheduled_job("project.relay_outbox", soft_time_limit_s=50, time_limit_s=55)
def relay_outbox() -> dict:
    from project.outbox import relay

    return relay()


@scheduled_job("project.mark_abandoned_job_runs", soft_time_limit_s=50, time_limit_s=55)
def mark_abandoned_job_runs() -> dict:
    from project.db.locks import delete_expired_leases
    from project.jobrunner import job_runs_mark_abandoned

    return {**job_runs_mark_abandoned(), "expired_leases_deleted": delete_expired_leases()}


# Hourly; each table's batches stop at RETENTION_MAX_BATCHES, and no batch starts after
# RETENTION_BUDGET_S, well inside the time limit.
@scheduled_job("project.apply_retention", soft_time_limit_s=1800, time_limit_s=1860)
def apply_retention_job() -> dict:
    from project.retention import apply_retention

    return apply_retention()


@worker_ready.connect
def relay_outbox_at_start(**kwargs) -> None:
    """A worker coming back after a broker outage publishes what the outbox holds at once,
    rather than at beat's next relay run (in a thread: the worker starts consuming meanwhile)."""

    def relay_once() -> None:
        from django.db import connection

        from project.outbox import relay

        try:
            relay(older_than_s=0, budget_s=30)
        except Exception:  # the relay job retries every minute; a worker must start regardless
            logging.getLogger("opsdeck.outbox").exception("outbox relay at worker start failed")
        finally:
            connection.close()

    threading.Thread(target=relay_once, name="outbox-relay-at-start", daemon=True).start()
