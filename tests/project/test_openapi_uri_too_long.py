"""A too-long request line is answered 414 by gunicorn, before Django: the schema says so (make fuzz
met it as an undocumented status code)."""

from drf_spectacular.generators import SchemaGenerator
from gunicorn.config import Config

from project.api.schema import URI_TOO_LONG


def test_every_operation_documents_the_414_the_http_server_answers_in_html():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    operations = [
        (method, path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "responses" in operation
    ]

    assert len(operations) >= 75
    for method, path, operation in operations:
        assert operation["responses"].get("414") == URI_TOO_LONG, (method, path)
    assert list(URI_TOO_LONG["content"]) == ["text/html"]


def test_the_documented_limit_is_gunicorns_own():
    # `make run` and the deploy files start gunicorn without --limit-request-line.
    assert Config().limit_request_line == 4094
    assert "4094 bytes" in URI_TOO_LONG["description"]
