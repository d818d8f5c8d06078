"""Tables of the reconciliation workflow: job schedules and their runs, periods and sign-off.

The exceptions workflow needs no table of its own: assignment, resolution code and adjusting
amount are columns of ReconciliationException (reconciliation/models.py), so a bulk assign is one UPDATE and the
list filters by assignee or code without a join.
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from reconciliation.models import Execution, ReconciliationJob, Tenant


class JobSchedule(models.Model):
    """A job's crontab: the beat job `reconciliation.run_due_schedules` starts its runs."""

    class Outcome(models.TextChoices):
        STARTED = "started"  # an execution was queued
        SKIPPED = "skipped"  # nothing new since the last run, or one is still running
        FAILED = "failed"  # the job could not be run (inactive, invalid rules)

    job = models.OneToOneField(ReconciliationJob, on_delete=models.CASCADE, related_name="schedule")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, db_index=False)
    crontab = models.CharField(max_length=100, help_text="minute hour day-of-month month day-of-week, in UTC")
    is_enabled = models.BooleanField(default=True)
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.CharField(max_length=10, choices=Outcome.choices, blank=True, default="")
    last_reason = models.CharField(max_length=300, blank=True, default="")
    last_execution = models.ForeignKey(
        Execution, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    # Records created after this moment are "new" for the next run (the last started run's time).
    records_seen_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            # The dispatcher's scan every minute: enabled schedules that are due.
            models.Index(fields=["next_run_at"], condition=Q(is_enabled=True), name="recon_sched_due_idx"),
            # The schedule list of a tenant (keyset on id).
            models.Index(fields=["tenant", "id"], name="recon_sched_tenant_idx"),
        ]

    def __str__(self) -> str:
        return f"schedule of job {self.job_id}: {self.crontab}"


class ScheduledRun(models.Model):
    """One due slot of a schedule and what came of it (the history the admin and API show)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, db_index=False)
    job = models.ForeignKey(ReconciliationJob, on_delete=models.CASCADE, db_index=False, related_name="+")
    due_at = models.DateTimeField()
    ran_at = models.DateTimeField(auto_now_add=True)
    outcome = models.CharField(max_length=10, choices=JobSchedule.Outcome.choices)
    reason = models.CharField(max_length=300, blank=True, default="")
    execution = models.ForeignKey(
        Execution, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )

    class Meta:
        constraints = [
            # A slot is run once, whichever dispatcher gets there first.
            models.UniqueConstraint(fields=["job", "due_at"], name="recon_schedrun_job_slot_uniq"),
        ]
        indexes = [models.Index(F("job"), F("id").desc(), name="recon_schedrun_job_idx")]

    def __str__(self) -> str:
        return f"run of job {self.job_id} due {self.due_at}: {self.outcome}"


class Period(models.Model):
    """A reconciliation period of a job (a month, say): records booked from starts_on to ends_on."""

    class Status(models.TextChoices):
        OPEN = "open"
        SIGNED_OFF = "signed_off"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, db_index=False)
    job = models.ForeignKey(ReconciliationJob, on_delete=models.CASCADE, related_name="periods", db_index=False)
    starts_on = models.DateField()
    ends_on = models.DateField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    signed_off_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    signed_off_at = models.DateTimeField(null=True, blank=True)
    # The balances at sign-off, kept as they were (the summary of an open period is live).
    summary = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(ends_on__gte=F("starts_on")), name="recon_period_ends_after_start"),
            models.UniqueConstraint(fields=["job", "starts_on"], name="recon_period_job_start_uniq"),
        ]
        indexes = [
            # "Is this date in a signed-off period of the job?" (every guarded write).
            models.Index(
                fields=["job", "starts_on", "ends_on"], condition=Q(status="signed_off"), name="recon_period_signed_idx"
            ),
            models.Index(F("tenant"), F("id").desc(), name="recon_period_tenant_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.starts_on}..{self.ends_on} of job {self.job_id} ({self.status})"


class CarriedForward(models.Model):
    """An exception still open at a sign-off, carried into the next period by an explicit choice."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, db_index=False)
    period = models.ForeignKey(Period, on_delete=models.CASCADE, related_name="carried_forward")
    unmatched_id = models.BigIntegerField()  # ReconciliationException is partitioned: referred to by id
    record_id = models.BigIntegerField()
    side = models.CharField(max_length=5)
    amount = models.DecimalField(max_digits=18, decimal_places=4)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["period", "unmatched_id"], name="recon_carry_period_unm_uniq")]
        # "Was this exception carried forward?" (the guard lets carried-forward exceptions be worked).
        indexes = [models.Index(fields=["unmatched_id"], name="recon_carry_unmatched_idx")]

    def __str__(self) -> str:
        return f"exception {self.unmatched_id} carried forward from period {self.period_id}"
