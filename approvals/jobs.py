"""The automation job: every minute on queue `automation`, and "run now" from the admin."""

import logging
import time
from dataclasses import asdict, dataclass

import psutil
from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string

from approvals import metrics, selectors, services
from project.celery import app as celery_app
from project.db.replica import replication_lag
from project.jobrunner import JobSkipped, scheduled_job
from project.outbox import BROKER_ERRORS, outbox_enqueue

logger = logging.getLogger("opsdeck.approvals")
AUTOMATION_JOB = "approvals.run_automation"
AUTOMATION_QUEUE = "automation"


class QueueFull(Exception):
    pass


@dataclass(frozen=True)
class HostLoad:
    cpu_percent: float
    memory_percent: float


def host_load() -> HostLoad:
    """The machine's CPU (sampled over 0.2 s) and memory use: the guard's default input."""
    return HostLoad(cpu_percent=psutil.cpu_percent(interval=0.2), memory_percent=psutil.virtual_memory().percent)


def overload_reason() -> str | None:
    """Why the machine is too busy for a run now (guide: CPU > 80% or memory > 85%), or None.

    Its input is AUTOMATION_LOAD_PROBE (a dotted path to a function returning HostLoad), so
    tests pin it instead of reading a shared machine's load."""
    load = import_string(settings.AUTOMATION_LOAD_PROBE)()
    if load.cpu_percent > settings.AUTOMATION_CPU_MAX_PERCENT:
        return f"cpu {load.cpu_percent:.0f}% > {settings.AUTOMATION_CPU_MAX_PERCENT}%"
    if load.memory_percent > settings.AUTOMATION_MEMORY_MAX_PERCENT:
        return f"memory {load.memory_percent:.0f}% > {settings.AUTOMATION_MEMORY_MAX_PERCENT}%"
    # Bulk decisions are WAL the read replica must replay: let a lagging one catch up first.
    lag_max_s = settings.AUTOMATION_REPLICA_LAG_MAX_S
    if lag_max_s and (lag_s := replication_lag().get("lag_s")) is not None and lag_s > lag_max_s:
        return f"replica lag {lag_s:.1f}s > {lag_max_s:g}s"
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
    # Bounded like the outbox's publish: "run now" must not hang on a stalled broker.
    timeout_s = settings.OUTBOX_PUBLISH_TIMEOUT_S
    options = {"socket_connect_timeout": timeout_s, "socket_timeout": timeout_s, "max_retries": 0}
    with celery_app.connection_for_write(connect_timeout=timeout_s, transport_options=options) as conn:
        return int(conn.default_channel.client.llen(AUTOMATION_QUEUE))


def enqueue_automation_run() -> str:
    """Queue a run now, unless QUEUE_MAX_SIZE runs are already waiting (guide: drop beyond it).
    With the broker away the length is unknown: the run waits in the outbox for its return."""
    try:
        waiting = automation_queue_length()
    except BROKER_ERRORS:
        waiting = 0
    if waiting >= settings.QUEUE_MAX_SIZE:
        raise QueueFull(f"{waiting} automation runs are already queued (limit {settings.QUEUE_MAX_SIZE}).")
    with transaction.atomic():
        message = outbox_enqueue(AUTOMATION_JOB, queue=AUTOMATION_QUEUE)
    return str(message.idempotency_key)
