"""Platform models: who did what (ActivityLog), how each scheduled job run went (JobRun), when
each materialized view was refreshed (MaterializedViewRefresh) and which Celery jobs a write
asked for (OutboxMessage)."""

import uuid

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models import Func, Value
from psqlextra.models import PostgresPartitionedModel
from psqlextra.types import PostgresPartitioningMethod


class JobRun(models.Model):
    """One run of a scheduled job: its outcome survives worker restarts (unlike Flower's)."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        SKIPPED = "skipped"
        RETRYING = "retrying"
        # Its worker died mid-run (the message was redelivered, or the sweeper found it past its
        # time limit): the run never finished and never will.
        ABANDONED = "abandoned"

    name = models.CharField(max_length=200)
    celery_id = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    # For runs sent by beat: the schedule and the minute it fired for (project/beat.py). A second
    # beat's message for the same slot cannot claim it (jobrun_one_per_schedule_slot).
    schedule = models.CharField(max_length=200, blank=True)
    slot_start = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["schedule", "slot_start"],
                condition=models.Q(slot_start__isnull=False),
                name="jobrun_one_per_schedule_slot",
            ),
        ]
        indexes = [
            # "last runs of job X": the backlog page and the admin filter by job.
            models.Index(fields=["name", "-started_at"], name="jobrun_name_started_idx"),
            # Admin list ordered by newest first.
            models.Index(fields=["-started_at"], name="jobrun_started_idx"),
            # Every job start: earlier unfinished runs of the same message (jobrunner, worker lost).
            models.Index(
                fields=["celery_id"],
                condition=models.Q(status__in=["running", "abandoned"]),
                name="jobrun_celery_unfinished_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.status} at {self.started_at:%Y-%m-%d %H:%M:%S}"


class ActivityLog(PostgresPartitionedModel):
    """Who did what, range-partitioned by month on created_at (kept by maintain_partitions)."""

    class Level(models.TextChoices):
        DEBUG = "debug"
        INFO = "info"
        WARNING = "warning"
        ERROR = "error"

    # The partition key must be part of the primary key; an AutoField cannot sit in a composite
    # key, so the id comes from a sequence created in the migration.
    pk = models.CompositePrimaryKey("id", "created_at")
    id = models.BigIntegerField(db_default=Func(Value("project_activitylog_id_seq"), function="nextval"))
    created_at = models.DateTimeField(db_default=Func(function="now"))
    # No index of its own: activity_user_created_idx starts with user_id (the FK's default
    # single-column index was redundant, flagged by the cockpit).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_constraint=False,
        db_index=False,
    )
    category = models.CharField(max_length=50)
    action = models.CharField(max_length=100)
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.INFO)
    entity_type = models.CharField(max_length=100, blank=True)
    entity_id = models.CharField(max_length=100, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=list, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    # The tenant whose data the act touched, for apps that register their category as
    # tenant-scoped (project.selectors.register_tenant_scoped_category): staff who are not
    # superusers read those rows only for their tenants. No FK: project/ names no domain app.
    tenant_id = models.BigIntegerField(null=True, blank=True)

    class PartitioningMeta:
        method = PostgresPartitioningMethod.RANGE
        key = ["created_at"]

    class Meta:
        indexes = [
            # Each index serves one read of project.selectors.activity_logs (guide 003's reads);
            # tests/project/test_activity_reader.py asserts the plan of each uses its index.
            # Recent activity, newest first, and every time-bounded read without a better key.
            models.Index(fields=["-created_at"], name="activity_created_desc_idx"),
            # A user's timeline: user_id = ? ORDER BY created_at DESC.
            models.Index(fields=["user", "created_at"], name="activity_user_created_idx"),
            # By category/action: action = ? [AND category = ?] ORDER BY created_at DESC. The guide's
            # (category, action) could not serve the ordering (a sort of every matching row);
            # an action names its category, so category stays a filter on this range.
            models.Index(fields=["action", "created_at"], name="activity_action_created_idx"),
            # By level (errors first in an incident): level = ? ORDER BY created_at DESC.
            models.Index(fields=["level", "created_at"], name="activity_level_created_idx"),
            # An entity's history (activity_for_entity, and the entity_type + entity_id filter).
            models.Index(fields=["entity_type", "entity_id"], name="activity_entity_idx"),
            # Metadata search: metadata @> {...} (and bulk acts' metadata @> {"ids": [id]}).
            # jsonb_path_ops: one hashed entry per path and value, not key and value apart.
            GinIndex(fields=["metadata"], name="activity_metadata_path_gin", opclasses=["jsonb_path_ops"]),
            # Tag search: tags @> [tag].
            GinIndex(fields=["tags"], name="activity_tags_gin"),
        ]

    def __str__(self) -> str:
        return f"{self.category}.{self.action} {self.entity_type}:{self.entity_id}"


class MaterializedViewRefresh(models.Model):
    """One refresh of a materialized view: PostgreSQL keeps no refresh time itself, so staleness is
    only known from these rows (project.matviews records one per refresh, failed ones too)."""

    class Status(models.TextChoices):
        OK = "ok"
        FAILED = "failed"

    view_name = models.CharField(max_length=200)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices)
    # False when the view was not yet populated: CONCURRENTLY cannot fill an empty view.
    concurrently = models.BooleanField(default=True)
    error = models.TextField(blank=True)

    class Meta:
        verbose_name_plural = "materialized view refreshes"
        indexes = [
            # "last refresh of view X" (materialized_view_status, DISTINCT ON view_name).
            models.Index(fields=["view_name", "-started_at"], name="mvrefresh_view_started_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.view_name} {self.status} at {self.started_at:%Y-%m-%d %H:%M:%S}"


class OutboxMessage(models.Model):
    """A Celery job a write asked for, stored in the write's own transaction (project/outbox.py).

    The write and its job cannot diverge: both commit or neither does. The message is published
    after commit with a short broker timeout; if the broker is away the row stays and the relay
    (project.relay_outbox, and each worker at start) publishes it once the broker is back.
    """

    job = models.CharField(max_length=200)
    kwargs = models.JSONField(default=dict, blank=True)
    queue = models.CharField(max_length=100, blank=True)
    # Also the Celery task id, and the key a delivering job checks (outbox.effect_once) so a
    # message published twice has its side effect once.
    idempotency_key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    created_at = models.DateTimeField(db_default=Func(function="now"))
    dispatched_at = models.DateTimeField(null=True, blank=True)
    publish_attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    # effect_once: a delivering job leases the message, then marks it done.
    effect_leased_until = models.DateTimeField(null=True, blank=True)
    effect_done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The relay's batch: oldest undispatched first (and the chaos harness' "nothing lost").
            models.Index(
                fields=["created_at"], condition=models.Q(dispatched_at__isnull=True), name="outbox_pending_idx"
            ),
            # Pruning dispatched messages past OUTBOX_KEEP_DAYS.
            models.Index(
                fields=["dispatched_at"], condition=models.Q(dispatched_at__isnull=False), name="outbox_dispatched_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.job} {self.idempotency_key}"


class WebhookDeliveryBase(models.Model):
    """One event for one receiver, attempted until delivered or dead (project/webhooks.py).

    Abstract: each app keeps its deliveries in its own table (with what says where they go — an
    endpoint row, a configured URL) and hands the model to a project.webhooks.WebhookSender.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"  # will be retried at next_attempt_at
        DEAD = "dead"  # gave up after WEBHOOK_MAX_ATTEMPTS

    event = models.CharField(max_length=50)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.event} delivery {self.pk} ({self.status})"


class Lease(models.Model):
    """A named lock that survives PgBouncer's transaction pooling: a row, claimed by an upsert
    that takes it only when it is free or expired (project/db/locks.py). A holder that dies
    without releasing it blocks the name until `expires_at`, never longer."""

    name = models.CharField(max_length=200, primary_key=True)
    holder = models.CharField(max_length=255)
    acquired_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder} until {self.expires_at:%Y-%m-%d %H:%M:%S}"
