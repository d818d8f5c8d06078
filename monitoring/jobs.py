"""Monitoring's beat jobs (history) and the maintenance actions the cockpit queues.

Every action is a job named `monitoring.maintenance_*` (routed to queue `maintenance`), runs with
lock_timeout and statement_timeout, takes identifiers only from the catalog (quoted with
psycopg.sql), and records what it did in ActivityLog.
"""

import functools

from monitoring import actions, history
from project.jobrunner import JobSkipped, scheduled_job
from project.models import ActivityLog


@scheduled_job("monitoring.sample_metrics", soft_time_limit_s=50, time_limit_s=55)
def sample_metrics() -> dict:
    return history.sample_metrics()


@scheduled_job("monitoring.snapshot_counters", soft_time_limit_s=120, time_limit_s=150)
def snapshot_counters() -> dict:
    return history.snapshot_counters()


@scheduled_job("monitoring.inspect_workers", soft_time_limit_s=30, time_limit_s=40)
def inspect_workers() -> dict:
    from monitoring.selectors.backlog import celery_inspect_live

    result = celery_inspect_live()
    return {"workers": len(result["workers"]), "duration_ms": result["duration_ms"], "error": result["error"]}


def _refusals_audited(name: str, func):
    """An action the catalog no longer allows (object gone, statement unsafe) is recorded as
    refused, with its reason, and its JobRun says "skipped: refused: <reason>" (no traceback)."""

    @functools.wraps(func)
    def run(**kwargs):
        try:
            return func(**kwargs)
        except actions.ActionRefused as refused:
            action = "explain_analyze" if name == "explain" and kwargs.get("analyze") else name
            target = {key: value for key, value in kwargs.items() if key not in ("requested_by", "parameters")}
            actions.audit(
                action,
                user_id=kwargs.get("requested_by"),
                entity_type="monitoring_action",
                entity_id=next(iter(target.values()), ""),
                metadata={**target, "outcome": "refused", "reason": str(refused)[:500]},
                level=ActivityLog.Level.WARNING,
            )
            raise JobSkipped(f"refused: {refused}") from None

    return run


def _maintenance(name: str, func):
    # Actions are not retried on their own (a REINDEX half-done is re-run by a person, who sees
    # the outcome); the long limit covers VACUUM and REINDEX of big tables.
    return scheduled_job(f"monitoring.maintenance_{name}", max_retries=0, soft_time_limit_s=3600, time_limit_s=3700)(
        _refusals_audited(name, func)
    )


maintenance_reindex = _maintenance("reindex", actions.reindex)
maintenance_drop_invalid_index = _maintenance("drop_invalid_index", actions.drop_invalid_index)
maintenance_cancel_backend = _maintenance("cancel_backend", actions.cancel_backend)
maintenance_terminate_backend = _maintenance("terminate_backend", actions.terminate_backend)
maintenance_vacuum = _maintenance("vacuum", actions.vacuum)
maintenance_vacuum_freeze = _maintenance("vacuum_freeze", actions.vacuum_freeze)
maintenance_create_partitions = _maintenance("create_partitions", actions.create_partitions)
maintenance_refresh_view = _maintenance("refresh_view", actions.refresh_view)
maintenance_reset_statements = _maintenance("reset_statements", actions.reset_statements)
maintenance_explain = _maintenance("explain", actions.explain)
