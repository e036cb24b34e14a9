"""Property-based fuzzing of the service's own OpenAPI document: nothing a client sends yields a 5xx.

Schemathesis' pytest parametrization does not run under pytest 9 (it reads a private node id), so each
operation's Hypothesis strategy is driven directly: same generation, same check.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

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
            case.call_and_validate(checks=[not_a_server_error])

        fuzz()
