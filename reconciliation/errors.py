"""Domain errors of reconciliation. Each declares its HTTP answer (project/errors.py): views do not
catch them, the one API exception handler (project/api/errors.py) maps them. Admin pages and jobs
catch them as ordinary exceptions."""

from project.errors import DomainError
from reconciliation.models import Match, ReconciliationException, Record, WebhookDelivery


class ReconciliationError(DomainError):
    """Base of the app's errors: a 400 whose message reads like a serializer's non-field error."""

    http_status = 400
    http_code = "invalid"
    http_field = "non_field_errors"


class InvalidRules(ReconciliationError):
    """Rules that do not validate: a 400 listing every problem under `rules` ("path: message")."""

    http_code = "invalid_rules"
    http_field = None  # every problem is listed (http_extra), not the one message a field carries

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{path}: {message}" for path, message in errors.items()))

    def problems(self) -> list[str]:
        return [f"{path}: {message}" for path, message in self.errors.items()]

    def http_message(self) -> str:
        return f"rules: {self.problems()[0]}" if self.errors else "rules: invalid"

    def http_extra(self) -> dict:
        return {"fields": {"rules": self.problems()}}


class InvalidUpload(ReconciliationError):
    """An upload with bad rows (and on_error=reject) or one that cannot be read at all."""

    http_code = "invalid_upload"
    http_field = None

    def __init__(self, message: str, *, row_errors: list[dict] | None = None, bad_rows: int = 0):
        self.row_errors = row_errors or []
        self.bad_rows = bad_rows
        super().__init__(message)

    def http_extra(self) -> dict:
        return {"rows": self.row_errors, "bad_rows": self.bad_rows}


class InvalidProfile(ReconciliationError):
    """Source profile settings that cannot work: a 400 naming each field (ingest/profiles.py)."""

    http_code = "invalid_profile"
    http_field = None

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors.items()))

    def http_extra(self) -> dict:
        return {"fields": {name: [message] for name, message in self.errors.items()}}


class _Conflict(ReconciliationError):
    """The request conflicts with the current state (409): retrying as it is will not help."""

    http_status = 409
    http_code = "conflict"
    http_field = None


class ConcurrentUpload(_Conflict):
    def __init__(self):
        super().__init__(
            "Another upload of some of these records finished meanwhile; send it again (it is idempotent)."
        )


class ExecutionActive(_Conflict):
    def __init__(self, execution_id: int):
        self.execution_id = execution_id
        super().__init__(f"Execution {execution_id} of this job is already queued or running.")


class JobInactive(ReconciliationError):
    pass


class NotReviewable(_Conflict):
    """The match or exception is not in a state that allows this action (already decided, say)."""


class RecordsNotOpen(_Conflict):
    def __init__(self, record_ids: list[int]):
        self.record_ids = record_ids
        super().__init__(f"These records are not open (already matched, or not in this job): {record_ids}")


class _NotFound(ReconciliationError):
    """A row the caller named does not exist (in its tenants): a 404 that says no more. Each is also
    its model's DoesNotExist, so `except Match.DoesNotExist` keeps catching it."""

    http_status = 404
    http_code = "not_found"
    http_field = None

    def http_message(self) -> str:
        return "Not found."


class MatchNotFound(_NotFound, Match.DoesNotExist):
    pass


class RecordsNotFound(_NotFound, Record.DoesNotExist):
    pass


class ExceptionNotFound(_NotFound, ReconciliationException.DoesNotExist):
    pass


class DeliveryNotFound(_NotFound, WebhookDelivery.DoesNotExist):
    pass
