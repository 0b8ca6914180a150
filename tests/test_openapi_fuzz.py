"""Property-based fuzzing of every documented operation (schemathesis strategies built from our
own OpenAPI document): whatever the input, the API answers without a server error. `/stream` is
left out: its answer never ends."""

from __future__ import annotations

import base64

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.conftest import PASSWORD, USER

AUTHORIZATION = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def test_no_input_makes_any_operation_fail(api_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json").exclude(path="/stream")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 15

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def answers_without_a_server_error(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
            case.call_and_validate(
                base_url=api_url,
                headers={"Authorization": AUTHORIZATION},
                checks=[not_a_server_error],
            )

        answers_without_a_server_error()
