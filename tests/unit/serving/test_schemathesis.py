"""Property-based fuzzing of the service's own OpenAPI document: nothing a client sends yields a 5xx, and the
document says what the service does: schema-valid bodies are accepted, schema-invalid ones rejected, every
status code, content type and response body is the documented one.

Schemathesis' pytest parametrization does not run under pytest 9 (it reads a private node id), so each
operation's Hypothesis strategy is driven directly: same generation, same check.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from serving.app import create_app
from serving.settings import ServiceSettings


@pytest.mark.slow
def test_no_server_errors(champion: dict[str, Any]) -> None:
    app = create_app(
        ServiceSettings(stack=None, model_name="flight-delay", profiling=False, watch_interval_s=3600)
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {f"{op.method.upper()} {op.path}" for op in operations}
    assert {
        "POST /predict",
        "POST /predict/batch",
        "POST /predict/columns",
        "POST /explain",
        "POST /feedback",
        "GET /metrics",
    } <= labels
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case: Any) -> None:
            if _ragged(case.body):
                # the one rule JSON Schema cannot state (arrays of equal length across properties): the
                # document says it in words, and the service answers a 422 that says it too
                response = case.call()
                assert response.status_code == 422, response.text
                assert "same number of values" in response.text
                return
            case.call_and_validate(checks=CHECKS)

        fuzz()


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
]


def _ragged(body: Any) -> bool:
    """A ``/predict/columns`` body whose arrays differ in length."""
    columns = body.get("columns") if isinstance(body, dict) else None
    if not isinstance(columns, dict):
        return False
    return len({len(v) for v in columns.values() if isinstance(v, list)}) > 1
