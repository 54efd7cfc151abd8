"""The upstream timeout under gunicorn + gevent: a bound on the model's silence between two
chunks, never on the whole reply (the transport sets it as the socket timeout of each read)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from ..support import SECRET_KEY, FakeUpstream, LiveServer, Script

TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def impatient_server(upstream_server: FakeUpstream) -> Iterator[LiveServer]:
    server = LiveServer(
        {
            "OPENAI_API_KEY": SECRET_KEY,
            "OPENAI_BASE_URL": upstream_server.base_url,
            "UPSTREAM_TIMEOUT_S": str(TIMEOUT_S),
            "OPENAI_MAX_RETRIES": "0",
            "LOG_FORMAT": "json",
        }
    )
    yield server
    server.stop()


def test_a_model_silent_mid_stream_ends_the_reply_after_the_timeout(
    impatient_server: LiveServer, upstream: FakeUpstream
) -> None:
    upstream.script = Script(deltas=["a", "b", "c"], stall_after=2)
    started = time.monotonic()
    answer = requests.post(f"{impatient_server.url}/api/chat/stream", json={"message": "hi"}, timeout=10)
    elapsed = time.monotonic() - started
    assert answer.status_code == 200
    assert answer.text == "ab\n[error: The model stopped sending for longer than the upstream timeout.]"
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 1.0


def test_deltas_slower_in_all_than_the_timeout_but_never_silent_for_it_complete(
    impatient_server: LiveServer, upstream: FakeUpstream
) -> None:
    upstream.script = Script(deltas=["a", "b", "c", "d"], delay=0.6 * TIMEOUT_S)
    answer = requests.post(f"{impatient_server.url}/api/chat/stream", json={"message": "hi"}, timeout=10)
    assert (answer.status_code, answer.text) == (200, "abcd")


def test_a_model_that_never_answers_gets_a_504_after_the_timeout(
    impatient_server: LiveServer, upstream: FakeUpstream
) -> None:
    upstream.script = Script(no_headers=True)
    started = time.monotonic()
    answer = requests.post(f"{impatient_server.url}/api/chat/stream", json={"message": "hi"}, timeout=10)
    elapsed = time.monotonic() - started
    assert answer.status_code == 504
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 1.0
