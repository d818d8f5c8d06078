"""Approvals: content entities, proposed versions of them, the rule that decides, its audit."""

from django.conf import settings
from django.db import models
from django.db.models import Func, Q, Value
from psqlextra.models import PostgresPartitionedModel
from psqlextra.types import PostgresPartitioningMethod


class EntityType(models.TextChoices):
    TOPIC = "topic"
    ATOM = "atom"


class ContentEntity(models.Model):
    title = models.CharField(max_length=300)
    body = models.TextField(blank=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.title


class Topic(ContentEntity):
    class Meta:
        indexes = [models.Index(fields=["created_at", "id"], name="topic_created_id_idx")]  # cursor


class Atom(ContentEntity):
    class Meta:
        indexes = [models.Index(fields=["created_at", "id"], name="atom_created_id_idx")]  # cursor


class AuthorProfile(models.Model):
    """What rules may know of an author beyond auth.User: a trust level staff assign."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="author_profile")
    trust_level = models.PositiveSmallIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.user} (trust {self.trust_level})"


class Version(models.Model):
    """A proposed change to a topic or atom, decided once by a rule or a person."""

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"
        REVERTED = "reverted"

    entity_type = models.CharField(max_length=10, choices=EntityType.choices)
    entity_id = models.BigIntegerField()
    title = models.CharField(max_length=300)
    content = models.TextField()
    tags = models.JSONField(default=list, blank=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    # Kept in step with status (approved = status is approved) for the guide's badge indexes.
    approved = models.BooleanField(default=False)
    # Indexed only where set (Meta.indexes): see version_decided_by_idx.
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    decided_by_rule = models.ForeignKey(
        "ApprovalRule", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    # The wording of the rule that decided (its revision then), as the audit log records it.
    decided_by_rule_revision = models.PositiveIntegerField(null=True, blank=True)
    decision_reason = models.CharField(max_length=500, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    # The entity's title and body just before this version was applied, so a revert restores them.
    replaced_title = models.CharField(max_length=300, null=True, blank=True)
    replaced_content = models.TextField(null=True, blank=True)
    reverted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    reverted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            # Guide: idx_versions_approved — the badge's approved/unapproved lookups per entity kind.
            models.Index(
                fields=["approved"], name="version_approved_idx", condition=Q(entity_type__in=["topic", "atom"])
            ),
            # Guide: idx_versions_approved_created — pending count and the automation's
            # oldest-first claim (status equivalent: pending only).
            models.Index(
                fields=["created_at", "id"], name="version_pending_created_idx", condition=Q(status="pending")
            ),
            # An entity's history: the rules' "has earlier approved versions".
            # Deliberately not indexed, since every decided version pays for each index: tags (no
            # query filters versions by tag through an index), decided_at (the false-positive rate
            # reads the audit log's time index) and created_at (the list pages on the primary key).
            models.Index(fields=["entity_type", "entity_id", "created_at"], name="version_entity_idx"),
            # Deleting a user or a rule sets these to NULL (ON DELETE SET NULL looks them up by
            # value). Only set values are indexed: a decision changes indexed columns, so every
            # decided row is inserted into every full index, NULLs included; partial ones skip the
            # columns a decision leaves NULL (a person's decision has no rule, the automation's no
            # user, neither a reverter), two index insertions fewer per decided version.
            models.Index(fields=["decided_by"], name="version_decided_by_idx", condition=Q(decided_by__isnull=False)),
            models.Index(
                fields=["decided_by_rule"], name="version_decided_rule_idx", condition=Q(decided_by_rule__isnull=False)
            ),
            models.Index(
                fields=["reverted_by"], name="version_reverted_by_idx", condition=Q(reverted_by__isnull=False)
            ),
        ]
        permissions = [("decide_version", "Can approve, reject and revert versions")]
        constraints = [
            models.CheckConstraint(
                condition=Q(approved=True, status="approved") | (Q(approved=False) & ~Q(status="approved")),
                name="version_approved_matches_status",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.entity_type} {self.entity_id}: {self.title} ({self.status})"


class ApprovalRule(models.Model):
    """One rule of the policy: active rules are tried in priority order, the first match decides."""

    class Action(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"
        LEAVE = "leave"  # for staff: the version stays pending and no later rule is tried

    class Mode(models.TextChoices):
        LIVE = "live"  # decides
        EVALUATE = "evaluate"  # decides nothing; records what it would have decided

    name = models.CharField(max_length=200, unique=True)
    is_active = models.BooleanField(default=False)
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.LIVE)
    # Lower first; ties in id order.
    priority = models.IntegerField(default=100)
    conditions = models.JSONField(help_text="all / any / not over comparisons; see docs/approvals-rules.md")
    action = models.CharField(max_length=10, choices=Action.choices)
    # Optional scope, checked before the conditions: one entity type, and/or any of these tags.
    scope_entity_type = models.CharField(max_length=10, choices=EntityType.choices, blank=True)
    scope_tags = models.JSONField(default=list, blank=True)
    # Bumped on every change, so an audit row always says which wording of the rule fired.
    revision = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            # Guide: idx_approval_rules_is_active — the active policy's lookup.
            models.Index(fields=["is_active"], name="rule_active_idx", condition=Q(is_active=True)),
            models.Index(fields=["created_at", "id"], name="rule_created_id_idx"),  # cursor
        ]

    def __str__(self) -> str:
        return f"{self.name} r{self.revision}"


class RuleEvaluation(models.Model):
    """What a rule in evaluate mode would have decided on a version (once per rule revision)."""

    rule_id = models.BigIntegerField()
    rule_revision = models.PositiveIntegerField()
    version_id = models.BigIntegerField()
    # approved / rejected / left (for staff)
    would_decide = models.CharField(max_length=10)
    created_at = models.DateTimeField(db_default=Func(function="now"))

    class Meta:
        constraints = [
            # A version pending for several runs is evaluated again; one row per wording is enough.
            models.UniqueConstraint(fields=["rule_id", "rule_revision", "version_id"], name="one_evaluation_per_rule"),
        ]

    def __str__(self) -> str:
        return f"rule {self.rule_id} r{self.rule_revision} would have {self.would_decide} version {self.version_id}"


class AutomationAuditLog(PostgresPartitionedModel):
    """One row per automated decision, range-partitioned by month on created_at."""

    pk = models.CompositePrimaryKey("id", "created_at")
    id = models.BigIntegerField(db_default=Func(Value("approvals_automationauditlog_id_seq"), function="nextval"))
    created_at = models.DateTimeField(db_default=Func(function="now"))
    # Ids, not foreign keys: a partitioned table's rows outlive the rows they mention.
    rule_id = models.BigIntegerField()
    rule_revision = models.PositiveIntegerField()
    version_id = models.BigIntegerField()
    decision = models.CharField(max_length=10)
    reason = models.CharField(max_length=500)
    # Time the whole batch took, per decision (batch duration / batch size).
    duration_ms = models.FloatField()

    class PartitioningMeta:
        method = PostgresPartitioningMethod.RANGE
        key = ["created_at"]

    class Meta:
        indexes = [
            models.Index(fields=["-created_at"], name="audit_created_desc_idx"),  # guide; audit list
            models.Index(fields=["rule_id", "-created_at"], name="audit_rule_created_idx"),  # guide
            models.Index(fields=["version_id"], name="audit_version_idx"),  # a version's audit trail
        ]

    def __str__(self) -> str:
        return f"rule {self.rule_id} r{self.rule_revision} {self.decision} version {self.version_id}"


class NotificationSubscription(models.Model):
    """A staff member's standing request for a digest email when a condition of the approvals
    backlog or automation holds (approvals/notifications.py evaluates them every minute)."""

    class Kind(models.TextChoices):
        BACKLOG = "backlog"  # more than N pending, and/or the oldest pending older than M minutes
        RULE_DISAGREEMENT = "rule_disagreement"  # a rule in evaluate mode disagrees with staff > X%
        AUTOMATION_SKIPS = "automation_skips"  # the guard skipped the automation more than N times

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    # Each kind's parameters; the others stay NULL (notification_subscription_parameters_match_kind).
    pending_above = models.PositiveIntegerField(null=True, blank=True, help_text="backlog: more than this many pending")
    oldest_pending_minutes = models.PositiveIntegerField(
        null=True, blank=True, help_text="backlog: the oldest pending version older than this many minutes"
    )
    disagreement_percent = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="rule_disagreement: more than this % of compared decisions (0-99)"
    )
    skips_above = models.PositiveIntegerField(
        null=True, blank=True, help_text="automation_skips: more than this many guard skips in the window"
    )
    interval_minutes = models.PositiveIntegerField(default=60, help_text="at most one digest per this many minutes")
    enabled = models.BooleanField(default=True)
    last_sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # One subscription per condition and person: a digest lists each condition once.
            models.UniqueConstraint(fields=["user", "kind"], name="one_notification_subscription_per_kind"),
            models.CheckConstraint(
                condition=(
                    Q(
                        kind="backlog",
                        disagreement_percent__isnull=True,
                        skips_above__isnull=True,
                    )
                    & (Q(pending_above__isnull=False) | Q(oldest_pending_minutes__isnull=False))
                )
                | Q(
                    kind="rule_disagreement",
                    disagreement_percent__isnull=False,
                    pending_above__isnull=True,
                    oldest_pending_minutes__isnull=True,
                    skips_above__isnull=True,
                )
                | Q(
                    kind="automation_skips",
                    skips_above__isnull=False,
                    pending_above__isnull=True,
                    oldest_pending_minutes__isnull=True,
                    disagreement_percent__isnull=True,
                ),
                name="notification_subscription_parameters_match_kind",
            ),
            # "More than 100%" never fires.
            models.CheckConstraint(
                condition=Q(disagreement_percent__lte=99), name="notification_disagreement_percent_below_100"
            ),
            models.CheckConstraint(
                condition=Q(oldest_pending_minutes__gte=1), name="notification_oldest_pending_minutes_positive"
            ),
            # At least a minute (the job's period), at most a week.
            models.CheckConstraint(
                condition=Q(interval_minutes__gte=1, interval_minutes__lte=10_080),
                name="notification_interval_minutes_range",
            ),
        ]
        # No index beyond the unique one: the job reads every enabled subscription (a few per
        # staff member) once a minute, and the API lists one user's through the unique index.

    def __str__(self) -> str:
        return f"{self.user} {self.kind}"


class NotificationDigest(models.Model):
    """One digest email as sent: to whom, when, and the conditions it reported with their values."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    email = models.EmailField()
    subject = models.CharField(max_length=200)
    sent_at = models.DateTimeField()
    # [{"kind", "summary", "value", "threshold", ...}], one per firing condition.
    conditions = models.JSONField()

    class Meta:
        indexes = [
            # The admin's list, newest first.
            models.Index(fields=["-sent_at", "-id"], name="digest_sent_idx"),
            # One person's digests, newest first: the admin for a staff member, the user filter.
            models.Index(fields=["user", "-sent_at"], name="digest_user_sent_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.subject} to {self.email} at {self.sent_at:%Y-%m-%d %H:%M}"
