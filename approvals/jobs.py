"""The automation job: every minute on queue `automation`, and "run now" from the admin."""

import logging
import time
from dataclasses import asdict

from django.conf import settings
from django.db import transaction

from approvals import automation, guard, metrics, notifications, selectors
from approvals.broker import AUTOMATION_JOB, AUTOMATION_QUEUE, GUARD_SKIP_KEY, automation_queue_length
from project.jobrunner import JobSkipped, scheduled_job
from project.outbox import BROKER_ERRORS, outbox_enqueue

logger = logging.getLogger("opsdeck.approvals")
NOTIFICATIONS_JOB = "approvals.send_notifications"
__all__ = [
    "AUTOMATION_JOB",
    "AUTOMATION_QUEUE",
    "NOTIFICATIONS_JOB",
    "QueueFull",
    "enqueue_automation_run",
    "run_automation",
    "send_notifications",
]


class QueueFull(Exception):
    pass


def _observe_batch(seconds: float, batch) -> None:
    metrics.automation_batch_duration_seconds.observe(seconds)
    metrics.automation_rule_evaluation_seconds.observe(seconds)
    for decision, count in batch.decisions.items():
        metrics.automation_decisions_total.labels(decision=decision).inc(count)


@scheduled_job(
    AUTOMATION_JOB,
    concurrency=settings.AUTOMATION_MAX_CONCURRENT_RUNS,
    # The run itself stops between batches at AUTOMATION_RUN_TIMEOUT_S; these only catch a hung batch.
    soft_time_limit_s=settings.AUTOMATION_RUN_TIMEOUT_S + 30,
    time_limit_s=settings.AUTOMATION_RUN_TIMEOUT_S + 60,
)
def run_automation() -> dict:
    verdict = guard.guard_check()
    if verdict.skip:
        signal = verdict.reason.split()[0]
        metrics.automation_runs_skipped_total.labels(reason=signal).inc()
        # Marked as the guard's (not a lock or duplicate skip): notifications count these.
        raise JobSkipped(verdict.reason, details={GUARD_SKIP_KEY: signal})
    started = time.perf_counter()
    policy = selectors.active_policy_cached()
    result = automation.automation_run(
        policy=policy,
        batch_size=settings.AUTOMATION_GUARD_SMALL_BATCH_SIZE
        if verdict.small_batch
        else settings.AUTOMATION_BATCH_SIZE,
        max_batches=1 if verdict.small_batch else None,
        deadline_s=settings.AUTOMATION_RUN_TIMEOUT_S,
        on_batch=_observe_batch,
    )
    metrics.automation_job_duration_seconds.observe(time.perf_counter() - started)
    pending = selectors.pending_count_cached()
    metrics.versions_pending_count.set(pending)
    false_positive_rate = selectors.false_positive_rate()
    if false_positive_rate is not None:
        metrics.automation_false_positive_rate.set(false_positive_rate)
    summary = asdict(result) | {"pending": pending, "false_positive_rate": false_positive_rate}
    if verdict.small_batch:
        summary["guard"] = verdict.note
        logger.warning("automation: %s", verdict.note)
    if not policy:
        summary["note"] = "no active rule"
    return summary


def enqueue_automation_run() -> str:
    """Queue a run now, unless AUTOMATION_QUEUE_MAX_SIZE runs are already waiting (guide: drop
    beyond it). With the broker away the length is unknown: the run waits in the outbox."""
    try:
        waiting = automation_queue_length()
    except BROKER_ERRORS:
        waiting = 0
    limit = settings.AUTOMATION_QUEUE_MAX_SIZE
    if waiting >= limit:
        raise QueueFull(f"{waiting} automation runs are already queued (limit {limit}).")
    with transaction.atomic():
        message = outbox_enqueue(AUTOMATION_JOB, queue=AUTOMATION_QUEUE)
    return str(message.idempotency_key)


@scheduled_job(NOTIFICATIONS_JOB)
def send_notifications() -> dict:
    """Digest emails for approvals staff (approvals/notifications.py): every minute; each
    subscriber gets at most one per their interval, and only while a condition of theirs fires."""
    return notifications.notifications_send_due()
