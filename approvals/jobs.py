"""The automation job: every minute on queue `automation`, and "run now" from the admin."""

import logging
import time
from dataclasses import asdict

import psutil
from django.conf import settings

from approvals import metrics, selectors, services
from project.celery import app as celery_app
from project.jobrunner import JobSkipped, scheduled_job

logger = logging.getLogger("opsdeck.approvals")
AUTOMATION_JOB = "approvals.run_automation"
AUTOMATION_QUEUE = "automation"


class QueueFull(Exception):
    pass


def overload_reason() -> str | None:
    """Why the machine is too busy for a run now (guide: CPU > 80% or memory > 85%), or None."""
    cpu = psutil.cpu_percent(interval=0.2)
    if cpu > settings.AUTOMATION_CPU_MAX_PERCENT:
        return f"cpu {cpu:.0f}% > {settings.AUTOMATION_CPU_MAX_PERCENT}%"
    memory = psutil.virtual_memory().percent
    if memory > settings.AUTOMATION_MEMORY_MAX_PERCENT:
        return f"memory {memory:.0f}% > {settings.AUTOMATION_MEMORY_MAX_PERCENT}%"
    return None


@scheduled_job(
    AUTOMATION_JOB,
    concurrency=settings.SCHEDULER_MAX_CONCURRENT_JOBS,
    # The run itself stops between batches at JOB_TIMEOUT_SECONDS; these only catch a hung batch.
    soft_time_limit_s=settings.JOB_TIMEOUT_SECONDS + 30,
    time_limit_s=settings.JOB_TIMEOUT_SECONDS + 60,
)
def run_automation() -> dict:
    if reason := overload_reason():
        metrics.automation_runs_skipped_total.labels(reason=reason.split()[0]).inc()
        raise JobSkipped(reason)
    started = time.perf_counter()
    rule = selectors.active_rule_cached()

    def observe_batch(seconds: float, batch) -> None:
        metrics.automation_rule_evaluation_seconds.observe(seconds)
        if batch.decided_ids and rule is not None:
            decision = "approved" if rule.action == "approve" else "rejected"
            metrics.automation_decisions_total.labels(decision=decision).inc(len(batch.decided_ids))

    result = services.automation_run(
        rule=rule,
        batch_size=settings.AUTOMATION_BATCH_SIZE,
        deadline_s=settings.JOB_TIMEOUT_SECONDS,
        on_batch=observe_batch,
    )
    metrics.automation_job_duration_seconds.observe(time.perf_counter() - started)
    pending = selectors.pending_count_cached()
    metrics.versions_pending_count.set(pending)
    false_positive_rate = selectors.false_positive_rate()
    if false_positive_rate is not None:
        metrics.automation_false_positive_rate.set(false_positive_rate)
    summary = asdict(result) | {"pending": pending, "false_positive_rate": false_positive_rate}
    if rule is None:
        summary["note"] = "no active rule"
    return summary


def automation_queue_length() -> int:
    with celery_app.connection_for_write() as conn:
        return int(conn.default_channel.client.llen(AUTOMATION_QUEUE))


def enqueue_automation_run() -> str:
    """Queue a run now, unless QUEUE_MAX_SIZE runs are already waiting (guide: drop beyond it)."""
    waiting = automation_queue_length()
    if waiting >= settings.QUEUE_MAX_SIZE:
        raise QueueFull(f"{waiting} automation runs are already queued (limit {settings.QUEUE_MAX_SIZE}).")
    return run_automation.apply_async(queue=AUTOMATION_QUEUE).id
