"""The live API against its own OpenAPI document: schemathesis generates the requests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from ..support import LiveServer


@pytest.fixture(
    scope="module",
    params=[{}, {"API_KEYS": "contract-key", "RATE_LIMIT": "5/minute", "METRICS_TOKEN": "scrape"}],
    ids=["open", "guarded"],
)
def contract_server(request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    server = LiveServer({"DEMO_DELAY_MS": "0", "MAX_MESSAGE_CHARS": "2000", **request.param})
    yield server
    server.stop()


def test_every_response_matches_the_document(contract_server: LiveServer) -> None:
    schema = schemathesis.openapi.from_url(f"{contract_server.url}/openapi.json")
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,  # the same cases each run: a new disagreement shows in a change, not by luck
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate()  # no 500, and every status, header and body as documented

        check()
        checked.append(operation.label)
    # Schemathesis leaves out the document's own path; every other route was exercised.
    assert set(checked) == {
        "GET /",
        "POST /api/chat",
        "POST /api/chat/stream",
        "GET /healthz",
        "GET /metrics",
        "POST /api/conversations",
        "GET /api/conversations",
        "GET /api/conversations/{conversation_id}",
        "PATCH /api/conversations/{conversation_id}",
        "DELETE /api/conversations/{conversation_id}",
        "GET /api/conversations/{conversation_id}/stream",
        "POST /api/conversations/{conversation_id}/stop",
    }
