"""HTTP middleware: request ids, the JSON access log, conditional GET and compression."""

import gzip
import hashlib
import logging
import re
import time
import uuid

import brotli
from django.http import HttpResponseNotModified
from django.utils.cache import patch_vary_headers
from django.utils.functional import SimpleLazyObject, empty

from project.logging import request_id_var, user_id_var

access_logger = logging.getLogger("opsdeck.access")
REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")


class RequestIdMiddleware:
    """Takes X-Request-ID from the client (if sane) or makes one; echoes it on the response."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        request.id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request.id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response[REQUEST_ID_HEADER] = request.id
        return response


class AccessLogMiddleware:
    """One JSON line per request: method, path, status, duration, user id, request id."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if isinstance(user, SimpleLazyObject) and user._wrapped is empty:
            # Nothing in the request looked at the user: loading it now would read the session
            # (the database) for the log line alone, /health included. Log it as unknown.
            user = None
        user_id = user.pk if user is not None and user.is_authenticated else None
        token = user_id_var.set(user_id)
        try:
            access_logger.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
        finally:
            user_id_var.reset(token)
        return response


def _etag_matches(if_none_match: str, etag: str) -> bool:
    """True if If-None-Match names this representation (compression suffixes included)."""
    if if_none_match.strip() == "*":
        return True
    opaque = etag.strip('"')
    for candidate in if_none_match.split(","):
        candidate = candidate.strip().removeprefix("W/").strip('"')
        if candidate == opaque or candidate.rsplit("-", 1)[0] == opaque:
            return True
    return False


class StrongETagMiddleware:
    """Every successful GET carries a strong ETag of its body; If-None-Match gets a bare 304.

    Sits inside CompressionMiddleware, so the tag is computed on the identity body; the
    compression layer then appends "-gzip"/"-br" to keep the tag strong per encoding (RFC 9110
    §8.8.3), and this layer accepts those suffixed tags back.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.method not in ("GET", "HEAD") or response.status_code != 200 or response.streaming:
            return response
        if not response.has_header("ETag"):
            response["ETag"] = f'"{hashlib.blake2b(response.content, digest_size=16).hexdigest()}"'
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match and _etag_matches(if_none_match, response["ETag"]):
            return _not_modified(response)
        return response


def _not_modified(response):
    not_modified = HttpResponseNotModified()
    for header in ("ETag", "Cache-Control", "Vary", "Content-Location", "Expires", "Last-Modified"):
        if header in response:
            not_modified[header] = response[header]
    for cookie in response.cookies.values():
        not_modified.cookies[cookie.key] = cookie
    return not_modified


class CompressionMiddleware:
    """Brotli or gzip for responses of MIN_SIZE_BYTES or more, chosen by Accept-Encoding."""

    MIN_SIZE_BYTES = 1024
    # A task list page (23 KB of JSON): q5 0.48 ms -> 2.5 KB, q4 0.13 ms -> 3.0 KB, gzip-6 0.14 ms
    # -> 3.0 KB. q5 cost ~8% of a list request's CPU under load; q4 is as small as gzip, as fast.
    BROTLI_QUALITY = 4

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        patch_vary_headers(response, ("Accept-Encoding",))
        if (
            response.streaming
            or response.has_header("Content-Encoding")
            or len(response.content) < self.MIN_SIZE_BYTES
            or response.status_code < 200
            or response.status_code in (204, 304)
        ):
            return response
        encoding = self._choose(request.headers.get("Accept-Encoding", ""))
        if encoding is None:
            return response
        if encoding == "br":
            body = brotli.compress(response.content, quality=self.BROTLI_QUALITY)
        else:
            body = gzip.compress(response.content, compresslevel=6, mtime=0)
        if len(body) >= len(response.content):
            return response
        response.content = body
        response["Content-Encoding"] = encoding
        response["Content-Length"] = str(len(body))
        etag = response.get("ETag", "")
        if etag and not etag.startswith("W/"):
            opaque = etag.strip('"')
            response["ETag"] = f'"{opaque}-{encoding}"'
        return response

    @staticmethod
    def _choose(accept_encoding: str) -> str | None:
        offered = {}
        for part in accept_encoding.split(","):
            name, _, params = part.strip().partition(";")
            quality = 1.0
            if params.strip().startswith("q="):
                try:
                    quality = float(params.strip()[2:])
                except ValueError:
                    quality = 0.0
            offered[name.strip().lower()] = quality
        for encoding in ("br", "gzip"):
            if offered.get(encoding, offered.get("*", 0.0)) > 0:
                return encoding
        return None
