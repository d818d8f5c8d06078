"""Domain errors of the workflow: InvalidWorkflowInput answers 400, the rest 409 (project/errors.py
maps them through the one API exception handler)."""

from reconciliation.errors import ReconciliationError


class InvalidWorkflowInput(ReconciliationError):
    """The request names something that does not fit (an unknown user, a bad crontab)."""


class WorkflowConflict(ReconciliationError):
    """The current state forbids this change (the last admin, an overlapping period)."""

    http_status = 409
    http_code = "conflict"
    http_field = None


class PeriodSignedOff(WorkflowConflict):
    """The data lies in a signed-off period: read-only until an admin un-signs it."""

    def __init__(self, period_ids: list[int], what: str):
        self.period_ids = period_ids
        super().__init__(f"{what} lies in signed-off period(s) {period_ids}; an admin must un-sign it first.")


class OpenExceptionsRemain(WorkflowConflict):
    def __init__(self, exception_ids: list[int], unrun_records: int):
        self.exception_ids = exception_ids
        self.unrun_records = unrun_records
        parts = []
        if exception_ids:
            shown = exception_ids[:50]
            parts.append(f"open exceptions not carried forward: {shown}{' ...' if len(exception_ids) > 50 else ''}")
        if unrun_records:
            parts.append(f"{unrun_records} record(s) in the period were never run through the matcher")
        super().__init__("Cannot sign off: " + "; ".join(parts) + ".")
