"""Live fixtures: the real server (gunicorn + gevent from the Procfile) on the demo model or the fake."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..support import SECRET_KEY, FakeUpstream, LiveServer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/live/" in str(item.path):
            item.add_marker(pytest.mark.live)


@pytest.fixture(scope="module")
def demo_server() -> Iterator[LiveServer]:
    server = LiveServer({"DEMO_DELAY_MS": "40", "LOG_FORMAT": "json"})
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["chat", "responses"])
def openai_server(request: pytest.FixtureRequest, upstream_server: FakeUpstream) -> Iterator[LiveServer]:
    """The real server in front of the fake upstream, in each OPENAI_API mode."""
    server = LiveServer(
        {
            "OPENAI_API_KEY": SECRET_KEY,
            "OPENAI_BASE_URL": upstream_server.base_url,
            "OPENAI_API": request.param,
            "UPSTREAM_TIMEOUT_S": "2",
            "LOG_FORMAT": "json",
        }
    )
    yield server
    server.stop()
