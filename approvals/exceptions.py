class ApprovalError(Exception):
    """Base of the approvals app's domain errors; the API turns them into 4xx."""


class VersionsNotFound(ApprovalError):
    def __init__(self, missing_ids: list[int]):
        self.missing_ids = missing_ids
        super().__init__(f"These versions do not exist: {missing_ids[:50]}")


class EntityNotFound(ApprovalError):
    pass


class NotDecidable(ApprovalError):
    """The version is not open for this decision (e.g. approving an already approved version)."""


class RateLimited(ApprovalError):
    def __init__(self, *, action: str, limit: int, remaining: int, reset_in_s: int):
        self.action, self.limit, self.remaining, self.reset_in_s = action, limit, remaining, reset_in_s
        super().__init__(
            f"Rate limit: at most {limit} {action}s per minute; {remaining} left, window resets in {reset_in_s}s."
        )
