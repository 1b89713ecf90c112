"""Schemathesis fuzz of the served OpenAPI spec: valid and invalid bodies never cause a 500.

Every operation (predict and each encoder, JSON and multipart bodies; model, health, metrics) is
called with data generated from the spec the server publishes, both fitting it (positive) and
breaking it (negative), against the real server. Answers must be documented status codes with
the documented content type and schema. Derandomized and bounded, to stay well under a minute.
(Schemathesis' pytest plugin does not support pytest 9 yet, so hypothesis drives it directly.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
OPERATIONS = [
    pytest.param("/v1/predict", "POST", 80, id="predict"),
    pytest.param("/v1/encode/text", "POST", 40, id="encode-text"),
    pytest.param("/v1/encode/image", "POST", 40, id="encode-image"),
    pytest.param("/v1/encode/audio", "POST", 40, id="encode-audio"),
    pytest.param("/v1/model", "GET", 3, id="model"),
    pytest.param("/healthz", "GET", 3, id="healthz"),
    pytest.param("/metrics", "GET", 3, id="metrics"),
]


@pytest.fixture(scope="module")
def fuzz_schema(base_url: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{base_url}/openapi.json")


def test_spec_lists_exactly_the_fuzzed_operations(fuzz_schema: schemathesis.BaseSchema) -> None:
    listed = {(op.ok().path, op.ok().method.upper()) for op in fuzz_schema.get_all_operations()}
    assert listed == {(p.values[0], p.values[1]) for p in OPERATIONS}


CASES = [
    pytest.param(*p.values, GenerationMode.POSITIVE, id=f"{p.id}-positive") for p in OPERATIONS
] + [  # GET operations take no parameters, so nothing can break their schema
    pytest.param(*p.values, GenerationMode.NEGATIVE, id=f"{p.id}-negative") for p in OPERATIONS if p.values[1] == "POST"
]


@pytest.mark.parametrize(("path", "method", "examples", "mode"), CASES)
def test_no_server_errors(
    fuzz_schema: schemathesis.BaseSchema, path: str, method: str, examples: int, mode: GenerationMode
) -> None:
    operation = fuzz_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=CHECKS)

    check()
