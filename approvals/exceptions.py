from project.errors import DomainError


class ApprovalError(DomainError):
    """Base of the approvals app's domain errors; each declares its HTTP answer (project/errors.py)."""


class VersionsNotFound(ApprovalError):
    http_code = "not_found"
    http_field = "ids"

    def __init__(self, missing_ids: list[int]):
        self.missing_ids = missing_ids
        super().__init__(f"These versions do not exist: {missing_ids[:50]}")

    def http_message(self) -> str:
        return f"{self} Nothing was changed."


class EntityNotFound(ApprovalError):
    http_code = "not_found"
    http_field = "entity_id"


class NotDecidable(ApprovalError):
    """The version is not open for this decision (e.g. approving an already approved version)."""

    http_status = 409
    http_code = "conflict"


class RateLimited(ApprovalError):
    """Too many decisions: a 429 counted in versions, saying how many remain and when the window resets."""

    http_status = 429
    http_code = "rate_limited"

    def __init__(self, *, action: str, limit: int, remaining: int, reset_in_s: int):
        self.action, self.limit, self.remaining, self.reset_in_s = action, limit, remaining, reset_in_s
        super().__init__(
            f"Rate limit: at most {limit} {action}s per minute; {remaining} left, window resets in {reset_in_s}s."
        )

    def http_retry_after_s(self) -> float:
        return self.reset_in_s

    def http_extra(self) -> dict:
        return {"remaining": self.remaining}


class SubscriptionInvalid(ApprovalError):
    """A notification subscription's parameters do not fit its kind (or each other)."""

    http_code = "invalid"

    def __init__(self, field: str, message: str):
        self.http_field = field
        super().__init__(message)
