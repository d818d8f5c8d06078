"""One JSON envelope for every 4xx/5xx: {"error": {"code", "message", "fields"}}."""

import logging
import sys

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent
from django.http import Http404, HttpResponse, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from project.api.throttling import throttle_refused_request
from project.db.errors import RETRY_AFTER_S, database_unavailable
from project.errors import DomainError

logger = logging.getLogger("opsdeck.api")


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


class TooManyFields(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "The request has too many fields."
    default_code = "too_many_fields"


class BadRequest(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "Bad request."
    default_code = "bad_request"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


def domain_error_as_api_exception(error: DomainError) -> exceptions.APIException:
    """The one mapping of domain errors to HTTP: a field's problem reads like a serializer's, a
    retry-after like DRF's throttling (Retry-After header, "Expected available in …")."""
    message, code = error.http_message(), error.http_code
    if error.http_field is not None:
        api_exception = exceptions.ValidationError({error.http_field: [message]}, code=code)
    elif (wait := error.http_retry_after_s()) is not None:
        api_exception = exceptions.Throttled(wait=wait, detail=message, code=code)
    else:
        api_exception = exceptions.APIException(detail=message, code=code)
    api_exception.status_code = error.http_status
    api_exception.default_code = code
    api_exception.envelope_extra = error.http_extra()
    return api_exception


def _first_code(detail) -> str | None:
    if isinstance(detail, dict):
        for value in detail.values():
            if code := _first_code(value):
                return code
    elif isinstance(detail, list):
        for value in detail:
            if code := _first_code(value):
                return code
    else:
        return getattr(detail, "code", None)
    return None


def _message_for(detail, default: str) -> str:
    if isinstance(detail, dict):
        if len(detail) == 1:
            # One problem: say it ("Invalid cursor: …") rather than a generic sentence.
            ((name, problems),) = detail.items()
            first = problems[0] if isinstance(problems, list) and problems else problems
            if isinstance(first, str):
                return first if name in ("cursor", "page_size", "non_field_errors") else f"{name}: {first}"
        return "Some fields are invalid." if detail else default
    if isinstance(detail, list):
        return " ".join(str(item) for item in detail) or default
    return str(detail)


def error_body(code: str, message: str, fields: dict | None = None, **extra) -> dict:
    body = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    body.update(extra)
    return {"error": body}


def exception_handler(exc, context):
    """DRF's handler, then the envelope. Unhandled exceptions become an enveloped 500."""
    if isinstance(exc, DomainError):
        exc = domain_error_as_api_exception(exc)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        # Django's own limits, hit while DRF reads a form or multipart body.
        exc = PayloadTooLarge(f"Request bodies are limited to {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.")
    elif isinstance(exc, TooManyFieldsSent):
        exc = TooManyFields(f"At most {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} fields per request.")
    elif isinstance(exc, SuspiciousOperation):
        exc = BadRequest()
    if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed, exceptions.PermissionDenied)):
        # DRF checks permissions before throttles: count refused requests here, and answer 429 once
        # a client is over its rate, refused or not.
        try:
            throttle_refused_request(context.get("request"), context.get("view"))
        except exceptions.Throttled as throttled:
            exc = throttled
    if database_unavailable(exc):
        # The connection was terminated (restart, failover): a retry soon succeeds, so say so.
        logger.warning("database unavailable during an API request", exc_info=exc)
        return Response(
            error_body("database_unavailable", "The database is briefly unavailable; retry shortly.",
                       retry_after_s=RETRY_AFTER_S),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )  # fmt: skip
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("unhandled API error", exc_info=exc)
        return Response(
            error_body("server_error", "Internal server error."), status=status.HTTP_500_INTERNAL_SERVER_ERROR
        )
    detail = exc.detail if isinstance(exc, exceptions.APIException) else response.data
    code = _first_code(detail) if isinstance(exc, exceptions.ValidationError) else None
    code = code or getattr(exc, "default_code", "error")
    if isinstance(exc, exceptions.ValidationError) and isinstance(detail, dict):
        # Non-field problems (cursor, page_size, bulk ids) read like fields to a client.
        response.data = error_body(code, _message_for(detail, "Invalid input."), fields=response.data)
    else:
        extra = {}
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            extra["retry_after_s"] = int(exc.wait + 0.999)
        if (remaining := getattr(exc, "remaining", None)) is not None:
            extra["remaining"] = remaining
        extra.update(getattr(exc, "envelope_extra", {}))
        response.data = error_body(code, _message_for(detail, str(exc)), **extra)
    return response


def json_error_view(status_code: int, code: str, message: str):
    def view(request, exception=None):
        return JsonResponse(error_body(code, message), status=status_code)

    return view


handler400 = json_error_view(400, "bad_request", "Bad request.")
handler403 = json_error_view(403, "permission_denied", "You do not have permission to perform this action.")
handler404 = json_error_view(404, "not_found", "Not found.")
_server_error = json_error_view(500, "server_error", "Internal server error.")


def handler500(request):
    """Django's last resort (admin, middleware, non-DRF views). A lost database connection is a
    503 with Retry-After: plain text for the admin and other pages, the envelope for the API."""
    exc = sys.exc_info()[1]
    if exc is None or not database_unavailable(exc):
        return _server_error(request)
    if request.path.startswith("/api/"):
        response = JsonResponse(
            error_body("database_unavailable", "The database is briefly unavailable; retry shortly.",
                       retry_after_s=RETRY_AFTER_S),
            status=503,
        )  # fmt: skip
    else:
        response = HttpResponse(
            "Service briefly unavailable (database connection lost); retry shortly.\n",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
    response["Retry-After"] = str(RETRY_AFTER_S)
    return response
