class ReconciliationError(Exception):
    """Base of the reconciliation app's domain errors; the API turns them into 4xx."""


class InvalidRules(ReconciliationError):
    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{path}: {message}" for path, message in errors.items()))


class InvalidUpload(ReconciliationError):
    """An upload with bad rows (and on_error=reject) or one that cannot be read at all."""

    def __init__(self, message: str, *, row_errors: list[dict] | None = None, bad_rows: int = 0):
        self.row_errors = row_errors or []
        self.bad_rows = bad_rows
        super().__init__(message)


class ConcurrentUpload(ReconciliationError):
    def __init__(self):
        super().__init__(
            "Another upload of some of these records finished meanwhile; send it again (it is idempotent)."
        )


class ExecutionActive(ReconciliationError):
    def __init__(self, execution_id: int):
        self.execution_id = execution_id
        super().__init__(f"Execution {execution_id} of this job is already queued or running.")


class JobInactive(ReconciliationError):
    pass


class NotReviewable(ReconciliationError):
    """The match or exception is not in a state that allows this action (already decided, say)."""


class RecordsNotOpen(ReconciliationError):
    def __init__(self, record_ids: list[int]):
        self.record_ids = record_ids
        super().__init__(f"These records are not open (already matched, or not in this job): {record_ids}")


class WebhookTargetRefused(ReconciliationError):
    pass
