"""OpenAPI: the error envelope documented once, on every operation (a drf-spectacular postprocessing
hook, SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]), so no view can forget it."""

from http import HTTPStatus

ERROR_COMPONENT = "Error"
ERROR_SCHEMA = {
    "type": "object",
    "description": 'Every 4xx and 5xx: {"error": {"code", "message", "fields"?}} (docs/api.md).',
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "machine-readable, e.g. invalid_cursor, throttled"},
                "message": {"type": "string"},
                "fields": {
                    "type": "object",
                    "description": "each bad input (body field, filter, cursor, page_size) to its messages",
                    "additionalProperties": True,
                },
                "retry_after_s": {"type": "integer", "description": "429 and 503: seconds to wait"},
                "remaining": {"type": "integer", "description": "429 of a budget: how many are left"},
            },
            "additionalProperties": True,
        }
    },
}

# What any operation can answer, whatever it does: bad parameters or cursor, no or bad credentials,
# no permission, an unknown id, an Accept header it cannot satisfy, the throttle, and the database
# or broker being unavailable.
EVERY_OPERATION = (400, 401, 403, 404, 406, 429, 503)
# Operations that take a body or change state can also conflict with the current state, get a
# body over the size limit, or a body of a type they do not read.
WRITES = (409, 413, 415)
WRITE_METHODS = {"post", "put", "patch", "delete"}
# Answered by gunicorn before Django sees the request, so not in the envelope: a request line
# (method, path and query string) longer than its limit_request_line, 4094 bytes by default.
# `make fuzz` met it with ~100 repeated query parameters. Documented as what it is.
URI_TOO_LONG = {
    "description": "URI Too Long: the request line is over the HTTP server's limit (4094 bytes); "
    "answered by the server in front of Opsdeck as an HTML page, not the error envelope",
    "content": {"text/html": {"schema": {"type": "string"}}},
}


def error_statuses(method: str, operation: dict) -> tuple[int, ...]:
    if method in WRITE_METHODS or "requestBody" in operation:
        return EVERY_OPERATION + WRITES
    return EVERY_OPERATION


def add_error_responses(result, generator, request, public):
    """Add the error envelope for every status an operation can answer and does not document yet."""
    result.setdefault("components", {}).setdefault("schemas", {})[ERROR_COMPONENT] = ERROR_SCHEMA
    reference = {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for status in error_statuses(method, operation):
                operation["responses"].setdefault(
                    str(status),
                    {"description": HTTPStatus(status).phrase, "content": {"application/json": {"schema": reference}}},
                )
            operation["responses"].setdefault("414", URI_TOO_LONG)
    return result
