"""Domain errors that know their HTTP answer.

A domain app's exceptions subclass DomainError and declare their status, their error code and,
when the problem is one input's, the field to name. Services raise them; views do not catch them:
the one API exception handler (project/api/errors.py) turns any DomainError into the standard
envelope {"error": {"code", "message", "fields"?, ...}}. Admin pages and jobs catch them as
ordinary exceptions.

    class VersionsNotFound(ApprovalError):      # ApprovalError(DomainError)
        http_status = 400
        http_code = "not_found"
        http_field = "ids"                       # -> "fields": {"ids": [message]}
"""


class DomainError(Exception):
    """Base of every domain app's errors. Subclasses override the class attributes; the methods are
    for messages or envelope keys that depend on the instance."""

    http_status: int = 400
    http_code: str = "invalid"
    # When set, the error is reported as this input's problem, like a serializer's ValidationError
    # ({"fields": {http_field: [message]}} and the message "<field>: <message>").
    http_field: str | None = None

    def http_message(self) -> str:
        """What the client reads; str(self) unless the API says it differently."""
        return str(self)

    def http_retry_after_s(self) -> float | None:
        """Seconds after which a retry can succeed: a Retry-After header and retry_after_s."""
        return None

    def http_extra(self) -> dict:
        """More keys for the error envelope (after retry_after_s)."""
        return {}
