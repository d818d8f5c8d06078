"""Reconciliation: per tenant, match two record sets (left: e.g. a bank statement, right: a ledger).

Every row carries `tenant_id`, and every index that serves a list starts with it (guide 001):
tenant isolation is a WHERE clause the planner can use, not a post-filter.
"""

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import BrinIndex, GinIndex
from django.db import models
from django.db.models import F, Func, Q, Value
from django.db.models.functions import Upper
from psqlextra.models import PostgresPartitionedModel
from psqlextra.types import PostgresPartitioningMethod

# "ref: inv-2026/0012" and "INV20260012" are the same reference: upper case, an optional leading
# REF/REFERENCE word dropped, every character that is not a letter or digit removed. Shared by
# the generated column below and by the matcher's ad-hoc SQL, so they cannot disagree.
REFERENCE_PREFIX_PATTERN = r"^\s*REF(ERENCE)?([^A-Z0-9]+|$)"
REFERENCE_STRIP_PATTERN = r"[^A-Z0-9]+"
# Then the zero padding of a number that follows letters (or starts the reference) goes:
# "INV-0000109888" and "INV109888" are one invoice. Zeros inside a digit run stay ("INV20260012":
# with the separators gone, the zeros of "2026-0012" cannot be told from padding). A number of
# zeros only keeps one ("INV-000" -> "INV0"). bench/recon_data.normalize_reference is the same rule.
REFERENCE_PADDING_PATTERN = r"(^|[A-Z])0+(?=[0-9])"


def normalized_reference(expression) -> Func:
    without_prefix = Func(Upper(expression), Value(REFERENCE_PREFIX_PATTERN), Value(""), function="regexp_replace")
    stripped = Func(without_prefix, Value(REFERENCE_STRIP_PATTERN), Value(""), Value("g"), function="regexp_replace")
    return Func(stripped, Value(REFERENCE_PADDING_PATTERN), Value(r"\1"), Value("g"), function="regexp_replace")


class Tenant(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class TenantMembership(models.Model):
    class Role(models.TextChoices):
        # Ordered by power: a role can do everything the ones before it can.
        VIEWER = "viewer"
        OPERATOR = "operator"
        ADMIN = "admin"

    # No index of its own: membership_tenant_user_uniq starts with tenant.
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships", db_index=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tenant_memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "user"], name="membership_tenant_user_uniq")]
        # The user foreign key's own index serves "tenants of this user", asked on every request.

    def __str__(self) -> str:
        return f"{self.user} {self.role} of {self.tenant}"


class ReconciliationJob(models.Model):
    """What to reconcile and how: the rules JSON configures the matcher's passes."""

    # No index of its own: recon_jobs_list_covering starts with tenant.
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="jobs", db_index=False)
    name = models.CharField(max_length=200)
    rules = models.JSONField(default=dict, blank=True, help_text="See docs/reconciliation.md")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            # The job list (newest first, keyset on created_at, id) reads only this index: it
            # covers the listed columns. Its (tenant_id, created_at) prefix is the guide's
            # idx_jobs_tenant_created_at, which therefore is not created twice.
            models.Index(
                F("tenant"),
                F("created_at").desc(),
                F("id").desc(),
                include=["name", "is_active", "updated_at"],
                name="recon_jobs_list_covering",
            ),
            # "Active jobs of a tenant" (the is_active filter of the list).
            models.Index(
                F("tenant"),
                F("created_at").desc(),
                condition=Q(is_active=True),
                name="recon_jobs_active_idx",
            ),
            # Jobs whose rules use a feature (rules @> '{"passes": {"group": {...}}}').
            GinIndex(fields=["rules"], name="recon_jobs_rules_gin"),
        ]

    def __str__(self) -> str:
        return self.name


class Record(models.Model):
    """One line of either side. Unique per (job, side, external_id): a re-upload changes nothing."""

    class Side(models.TextChoices):
        LEFT = "left"
        RIGHT = "right"

    class Status(models.TextChoices):
        """Not a column: a record is matched when it has a MatchedRecord row (selectors annotate it)."""

        OPEN = "open"
        MATCHED = "matched"  # part of an auto, suggested or confirmed match

    # Django's foreign keys are DEFERRABLE INITIALLY DEFERRED: each row queues a check that runs
    # at COMMIT (measured: 7.6 s of a 1M-record upload for two of them; the job's alone ~1.5 s
    # per 1M-row side). Neither is kept in the database: records are written by the ingest only,
    # which takes the job row's KEY SHARE lock once (what each row's check took) so that the
    # job cannot go while an upload runs; the tenant is the job's. No service deletes a job.
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, db_index=False, db_constraint=False)
    job = models.ForeignKey(
        ReconciliationJob, on_delete=models.CASCADE, db_index=False, db_constraint=False, related_name="records"
    )
    side = models.CharField(max_length=5, choices=Side.choices)
    # Byte order ("C"): ids are compared for equality only, and a locale-aware comparison on
    # every index step of a million-row upload is wasted time.
    external_id = models.CharField(max_length=128, db_collation="C")
    amount = models.DecimalField(max_digits=18, decimal_places=4)
    currency = models.CharField(max_length=3)
    booked_on = models.DateField()
    reference = models.CharField(max_length=128, blank=True, default="")
    reference_norm = models.GeneratedField(
        expression=normalized_reference(F("reference")),
        output_field=models.CharField(max_length=128),
        db_persist=True,
    )
    counterparty = models.CharField(max_length=255, blank=True, default="")
    description = models.TextField(blank=True, default="")
    raw = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # Its (job, side) prefix also serves the matcher's load of one side of a job, and the
            # whole of it the record list of a job (keyset on side, external_id). Every index
            # costs about a quarter of the ingest time; a record has no other.
            models.UniqueConstraint(fields=["job", "side", "external_id"], name="recon_record_job_side_extid_uniq"),
            models.CheckConstraint(condition=Q(side__in=["left", "right"]), name="recon_record_side_valid"),
        ]
        indexes = [
            # Candidate lookup for one record (manual matching, the reasons of exceptions): same
            # job, other side, same currency, amount in a range.
            models.Index(
                fields=["job", "side", "currency", "amount"], include=["booked_on"], name="recon_record_candidate_idx"
            ),
            # mv_tenant_usage_hourly reads records by created_at range; rows arrive in created_at
            # order, so a BRIN index (a few kB) narrows it for almost no ingest cost.
            BrinIndex(fields=["created_at"], name="recon_record_created_brin"),
        ]

    def __str__(self) -> str:
        return f"{self.side} {self.external_id} {self.amount} {self.currency}"


class MatchedRecord(models.Model):
    """A record's place in a match. Its primary key is the record: a record is matched at most once.

    Matching a million records inserts a million of these narrow rows; updating a status column
    on the records themselves cost 16x more (every non-HOT update rewrites the row and all its
    index entries; measured 2.7 s against 0.17 s for 140,000 records).
    """

    # No database foreign key (its deferred check per row cost ~3 s per million links at COMMIT):
    # the ids come from the matcher's own reads of the records, and records are never deleted
    # on their own (only with their job, through the ORM, which deletes these rows first).
    record = models.OneToOneField(
        Record, primary_key=True, on_delete=models.CASCADE, related_name="matched", db_constraint=False
    )
    # A Match id; no foreign key to a partitioned table (its key is (id, matched_at)).
    match_id = models.BigIntegerField()

    def __str__(self) -> str:
        return f"record {self.record_id} in match {self.match_id}"


class Execution(models.Model):
    """One run of the matcher over a job's open records."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, db_index=False)
    job = models.ForeignKey(ReconciliationJob, on_delete=models.CASCADE, related_name="executions")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    dry_run = models.BooleanField(default=False)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Set by the worker after every pass; a running execution whose heartbeat is old is stuck.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # Passes already committed: a retry after a crash resumes after them.
    passes_done = ArrayField(models.CharField(max_length=20), default=list, blank=True)
    summary = models.JSONField(default=dict, blank=True)
    # What people did with this execution's work since it ran (reconciliation.review_counts):
    # the summary is the run's snapshot, this is live, and the summary endpoint shows both.
    review = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")

    class Meta:
        indexes = [
            # Execution list per tenant filtered by status (guide: idx_executions_tenant_status_started).
            models.Index(F("tenant"), F("status"), F("started_at").desc(), name="recon_exec_tenant_status_idx"),
            # "What is running now" (monitoring, the stuck sweeper).
            models.Index(
                F("tenant"), F("started_at").desc(), condition=Q(status="running"), name="recon_exec_running_idx"
            ),
            GinIndex(fields=["summary"], name="recon_exec_summary_gin"),
            # The execution list of a tenant, newest first (keyset on id).
            models.Index(fields=["tenant", "-id"], name="recon_exec_tenant_id_idx"),
        ]
        constraints = [
            # At most one execution per job is queued or running (the guide asks for running; a
            # second queued one would only wait for the first and match nothing new).
            models.UniqueConstraint(
                fields=["job"], condition=Q(status__in=["queued", "running"]), name="recon_exec_one_active_per_job"
            ),
        ]

    def __str__(self) -> str:
        return f"execution {self.pk} of job {self.job_id} ({self.status})"


class Match(PostgresPartitionedModel):
    """Records of both sides that belong together; range-partitioned by month on matched_at."""

    class Status(models.TextChoices):
        AUTO = "auto"
        SUGGESTED = "suggested"
        CONFIRMED = "confirmed"
        REJECTED = "rejected"

    class Pass(models.TextChoices):
        EXACT = "exact"
        TOLERANCE = "tolerance"
        GROUP = "group"
        MANUAL = "manual"

    pk = models.CompositePrimaryKey("id", "matched_at")
    id = models.BigIntegerField(db_default=Func(Value("reconciliation_match_id_seq"), function="nextval"))
    matched_at = models.DateTimeField(db_default=Func(function="now"))
    tenant_id = models.BigIntegerField()
    job_id = models.BigIntegerField()
    execution_id = models.BigIntegerField(null=True, blank=True)  # null for a manual match
    pass_name = models.CharField(max_length=10, choices=Pass.choices)
    status = models.CharField(max_length=10, choices=Status.choices)
    confidence = models.DecimalField(max_digits=5, decimal_places=4)
    left_ids = ArrayField(models.BigIntegerField())
    right_ids = ArrayField(models.BigIntegerField())
    left_amount = models.DecimalField(max_digits=18, decimal_places=4)
    right_amount = models.DecimalField(max_digits=18, decimal_places=4)
    reviewed_by_id = models.BigIntegerField(null=True, blank=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True, default="")

    class PartitioningMeta:
        method = PostgresPartitioningMethod.RANGE
        key = ["matched_at"]

    class Meta:
        indexes = [
            # Matches of a job, best first (guide: idx_matches_tenant_job_confidence).
            models.Index(
                F("tenant_id"), F("job_id"), F("confidence").desc(), F("id").desc(), name="recon_match_job_conf_idx"
            ),
            # The review queue: suggested matches of a tenant, oldest first.
            models.Index(fields=["tenant_id", "id"], condition=Q(status="suggested"), name="recon_match_review_idx"),
            # Matches of an execution (its report, the summary's recount).
            models.Index(fields=["execution_id"], name="recon_match_execution_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(confidence__gte=0) & Q(confidence__lte=1), name="recon_match_confidence_0_1"
            ),
        ]

    def __str__(self) -> str:
        return f"match {self.id} ({self.pass_name}, {self.status}, {self.confidence})"


class ReconciliationException(PostgresPartitionedModel):
    """An open record an execution could not match, with why: an entry of the exceptions queue.

    Named `Unmatched` until migration 0010; its table keeps that name (a rename of a partitioned
    table and its partitions buys nothing)."""

    class Reason(models.TextChoices):
        NO_CANDIDATE = "no_candidate"
        AMOUNT_OUTSIDE_DRIFT = "amount_outside_drift"
        CURRENCY_MISMATCH = "currency_mismatch"  # same reference and amount, other currency
        AMBIGUOUS = "ambiguous"
        LOW_CONFIDENCE = "low_confidence"
        REJECTED = "rejected"  # a person rejected the match it was in

    class ResolutionCode(models.TextChoices):
        WRITTEN_OFF = "written_off"
        TIMING_DIFFERENCE = "timing_difference"
        BANK_ERROR = "bank_error"
        DUPLICATE = "duplicate"
        OTHER = "other"

    pk = models.CompositePrimaryKey("id", "created_at")
    id = models.BigIntegerField(db_default=Func(Value("reconciliation_unmatched_id_seq"), function="nextval"))
    created_at = models.DateTimeField(db_default=Func(function="now"))
    tenant_id = models.BigIntegerField()
    job_id = models.BigIntegerField()
    execution_id = models.BigIntegerField(null=True, blank=True)
    record_id = models.BigIntegerField()
    side = models.CharField(max_length=5)
    amount = models.DecimalField(max_digits=18, decimal_places=4)
    reason = models.CharField(max_length=25, choices=Reason.choices)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by_id = models.BigIntegerField(null=True, blank=True)
    resolution = models.TextField(blank=True, default="")
    # The exceptions workflow (reconciliation/workflow/casework.py).
    assigned_to_id = models.BigIntegerField(null=True, blank=True)
    assigned_at = models.DateTimeField(null=True, blank=True)
    # db_default: the matcher's INSERTs do not name the workflow's columns.
    resolution_code = models.CharField(
        max_length=20, choices=ResolutionCode.choices, blank=True, default="", db_default=""
    )
    adjusting_amount = models.DecimalField(max_digits=18, decimal_places=4, null=True, blank=True)

    class PartitioningMeta:
        method = PostgresPartitioningMethod.RANGE
        key = ["created_at"]

    class Meta:
        db_table = "reconciliation_unmatched"
        indexes = [
            # The exceptions queue: open ones of a tenant (keyset on id).
            models.Index(fields=["tenant_id", "id"], condition=Q(resolved_at__isnull=True), name="recon_unm_open_idx"),
            # "Is this record already an open exception?" (every execution's final step).
            models.Index(fields=["record_id"], condition=Q(resolved_at__isnull=True), name="recon_unm_record_open_idx"),
            models.Index(fields=["execution_id"], name="recon_unm_execution_idx"),
            # A member's open exceptions (the assignee filter of the exceptions workflow).
            models.Index(
                fields=["tenant_id", "assigned_to_id", "id"],
                condition=Q(resolved_at__isnull=True),
                name="recon_unm_open_assignee_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"unmatched record {self.record_id} ({self.reason})"


class ReviewQueue(models.Model):
    """No table: the admin index lists the review queue (suggested matches) through it."""

    class Meta:
        managed = False
        default_permissions = ()  # the queue's permission is reconciliation.view_execution
        verbose_name = verbose_name_plural = "review queue (suggested matches)"

    def __str__(self) -> str:
        return str(self._meta.verbose_name)


class ExceptionsQueue(models.Model):
    """No table: the admin index lists the exceptions queue (unmatched records) through it."""

    class Meta:
        managed = False
        default_permissions = ()
        verbose_name = verbose_name_plural = "exceptions queue (unmatched records)"

    def __str__(self) -> str:
        return str(self._meta.verbose_name)


class Report(models.Model):
    """The final figures of a finished execution, kept when its matches are long archived."""

    execution = models.OneToOneField(Execution, on_delete=models.CASCADE, related_name="report")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, db_index=False)
    summary = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="recon_report_tenant_idx"),
            GinIndex(fields=["summary"], name="recon_report_summary_gin"),
        ]

    def __str__(self) -> str:
        return f"report of execution {self.execution_id}"


class WebhookEndpoint(models.Model):
    class Event(models.TextChoices):
        EXECUTION_COMPLETED = "execution.completed"
        EXECUTION_FAILED = "execution.failed"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=128)
    events = ArrayField(models.CharField(max_length=50, choices=Event.choices), default=list)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"  # will be retried at next_attempt_at
        DEAD = "dead"  # gave up after WEBHOOK_MAX_ATTEMPTS

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, db_index=False)
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
        indexes = [
            # The retry job's scan: deliveries due for another attempt (guide:
            # idx_webhook_deliveries_pending_retry). Delivered and dead ones never enter it.
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status__in=["pending", "failed"]),
                name="recon_webhook_due_idx",
            ),
            # The delivery list of a tenant, newest first.
            models.Index(fields=["tenant", "-id"], name="recon_webhook_tenant_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event} to endpoint {self.endpoint_id} ({self.status})"


class SourceProfile(models.Model):
    """How one source's CSV export maps onto records: its column names, date format, decimal and
    thousands separators, sign convention (one signed amount column, or debit and credit columns),
    delimiter and encoding. Named per tenant; an upload names it with ?profile=<id>."""

    class Encoding(models.TextChoices):
        UTF8 = "utf-8", "UTF-8 (a byte order mark is accepted)"
        WINDOWS_1252 = "windows-1252", "Windows-1252"

    # No index of its own: recon_profile_tenant_name_uniq starts with tenant.
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="source_profiles", db_index=False)
    name = models.CharField(max_length=100)
    # {record field: the file's column name}; see reconciliation/profiles.py for the fields.
    columns = models.JSONField(default=dict)
    date_format = models.CharField(max_length=20, default="YYYY-MM-DD")
    decimal_separator = models.CharField(max_length=1, default=".")
    thousands_separator = models.CharField(max_length=1, blank=True, default="")
    delimiter = models.CharField(max_length=1, default=",")
    encoding = models.CharField(max_length=20, choices=Encoding.choices, default=Encoding.UTF8)
    default_currency = models.CharField(max_length=3, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # Also the list of a tenant's profiles (keyset on id is served by the pk).
            models.UniqueConstraint(fields=["tenant", "name"], name="recon_profile_tenant_name_uniq"),
        ]

    def __str__(self) -> str:
        return self.name


# The workflow's tables (issue 14) belong to this app; defined in their own module.
from reconciliation.workflow.models import CarriedForward, JobSchedule, Period, ScheduledRun  # noqa: E402, F401
