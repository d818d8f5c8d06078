"""The OpenAPI schema documents the error envelope on every operation (issue 9, defect 6)."""

import pytest
from drf_spectacular.generators import SchemaGenerator

from project.api.schema import ERROR_COMPONENT, EVERY_OPERATION, WRITE_METHODS, WRITES

ENVELOPE = {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}


@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


def operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "responses" in operation:
                yield path, method, operation


def test_every_operation_documents_the_error_envelope_for_each_4xx_it_can_answer(schema):
    checked = 0
    for path, method, operation in operations(schema):
        expected = set(EVERY_OPERATION) | (set(WRITES) if method in WRITE_METHODS else set())
        documented = {int(code) for code in operation["responses"] if code.isdigit()}
        assert expected <= documented, (method, path, sorted(expected - documented))
        for code in expected:
            content = operation["responses"][str(code)]["content"]
            assert content["application/json"]["schema"] == ENVELOPE, (method, path, code)
        checked += 1
    assert checked >= 75  # the issue counted 84 operations; the walk must not silently see none


def test_the_envelope_requires_a_code_and_a_message(schema):
    envelope = schema["components"]["schemas"][ERROR_COMPONENT]
    assert envelope["required"] == ["error"]
    assert envelope["properties"]["error"]["required"] == ["code", "message"]


def test_index_usage_documents_that_an_index_definition_can_be_null(schema):
    index = schema["components"]["schemas"]["Index"]
    assert index["properties"]["definition"].get("nullable") is True
