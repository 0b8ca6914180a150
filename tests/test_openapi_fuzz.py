"""Property-based fuzzing of every documented operation (schemathesis strategies built from our
own OpenAPI document, valid and invalid requests alike): whatever the input, the API answers
without a server error and as documented — a documented status code and content type, the
documented headers, and a body that matches the schema. `/stream` is left out: its answer never
ends."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from core.db import Connection
from pipelines.ingestion import drain_inbox
from tests.conftest import PASSWORD, USER
from tests.support import send, tick

AUTHORIZATION = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
AS_DOCUMENTED = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def aapl_traded(client: httpx.Client, db: Connection) -> None:
    """AAPL (the symbol in the schema's examples) traded yesterday and today, promoted, and moments
    ago, still in the inbox: answers about it have every field filled in."""
    now = datetime.now(UTC)
    yesterday, a_minute_ago = now - timedelta(days=1), now - timedelta(minutes=1)
    send(client, [tick(1, ts=yesterday.isoformat()), tick(2, ts=a_minute_ago.isoformat())])
    drain_inbox(db)
    send(client, [tick(3, ts=now.isoformat())])


def test_every_operation_answers_any_request_as_documented(api_url: str, aapl_traded: None) -> None:
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json").exclude(path="/stream")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 15

    for operation in operations:
        # Valid and invalid requests; an operation without inputs has no invalid ones, and that
        # half of its draws is rejected.
        requests = st.one_of([operation.as_strategy(mode) for mode in schemathesis.GenerationMode])

        @given(case=requests)
        @settings(
            max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def answers_as_documented(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(
                base_url=api_url, headers={"Authorization": AUTHORIZATION}, checks=AS_DOCUMENTED
            )

        answers_as_documented()
