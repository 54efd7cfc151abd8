"""Every upstream fault, in both OpenAI APIs and both stream framings: what the client gets,
the one access line it leaves, and the next request served as usual."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from .fake_upstream import FakeUpstream, Script

ASK = {"message": "Say hello"}
BROKE = "The connection to the model broke."
MISCONFIGURED = "The service is misconfigured: the model provider rejected its API key."

# (name, script or None for a refused connection, status, sentence, headers, in band)
FAULTS: list[tuple[str, Script | None, int, str, dict[str, str], bool]] = [
    ("refused", None, 502, "The model service could not be reached.", {}, False),
    ("401", Script(status=401), 502, MISCONFIGURED, {}, False),
    ("403", Script(status=403), 502, MISCONFIGURED, {}, False),
    (
        "unknown-model",
        Script(status=404),
        502,
        "The model provider does not offer the model 'gpt-4o-mini'.",
        {},
        False,
    ),
    (
        "429-retry-after",
        Script(status=429, headers={"retry-after": "7"}),
        429,
        "The model service is rate limiting requests; retry in 7 s.",
        {"Retry-After": "7"},
        False,
    ),
    (
        "429-retry-after-ms",
        Script(status=429, headers={"retry-after-ms": "2500"}),
        429,
        "The model service is rate limiting requests; retry in 3 s.",
        {"Retry-After": "3"},
        False,
    ),
    ("500", Script(status=500), 502, "The model provider refused the request (HTTP 500).", {}, False),
    ("503", Script(status=503), 502, "The model provider refused the request (HTTP 503).", {}, False),
    ("stall-before-headers", Script(no_headers=True), 504, "The model did not answer in time.", {}, False),
    (
        "stall-before-first-delta",
        Script(first_delay=5),
        504,
        "The model stopped sending for longer than the upstream timeout.",
        {},
        False,
    ),
    (
        "stall-mid-stream",
        Script(stall_after=2),
        200,
        "The model stopped sending for longer than the upstream timeout.",
        {},
        True,
    ),
    ("cut-mid-stream", Script(cut_after=2), 200, BROKE, {}, True),
    (
        "malformed-sse",
        Script(malformed_after=2),
        200,
        "The model sent an event that could not be read.",
        {},
        True,
    ),
    (
        "error-event",
        Script(error_after=2, error_code="server_error"),
        200,
        "The model reported an error (server_error).",
        {},
        True,
    ),
]


def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def events(body: bytes) -> list[Any]:
    return [json.loads(block[6:]) for block in body.decode().split("\n\n") if block.startswith("data: ")]


@pytest.mark.parametrize("framing", ["text", "sse"])
@pytest.mark.parametrize(
    ("name", "script", "status", "sentence", "headers", "in_band"), FAULTS, ids=[f[0] for f in FAULTS]
)
def test_upstream_fault(
    make_openai_app: Callable[..., Flask],
    upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
    api: str,
    framing: str,
    name: str,
    script: Script | None,
    status: int,
    sentence: str,
    headers: dict[str, str],
    in_band: bool,
) -> None:
    caplog.set_level(logging.INFO)
    settings = {"OPENAI_API": api, "UPSTREAM_TIMEOUT_S": "0.4"}
    if script is None:
        settings["OPENAI_BASE_URL"] = refused_url()
    else:
        upstream.script = script
    client = make_openai_app(**settings).test_client()
    accept = {"Accept": "text/event-stream"} if framing == "sse" else {}
    started = time.monotonic()
    response = client.post("/api/chat/stream", json=ASK, headers=accept, buffered=True)
    assert time.monotonic() - started < 2.0
    assert response.status_code == status
    for header, value in headers.items():
        assert response.headers[header] == value
    if not in_band:
        assert response.get_json() == {"error": sentence}
    elif framing == "sse":
        assert events(response.get_data()) == [
            {"type": "token", "content": "Hello"},
            {"type": "token", "content": ","},
            {"type": "error", "message": sentence},
        ]
    else:
        assert response.get_data(as_text=True) == f"Hello,\n[error: {sentence}]"
    [line] = [r.fields for r in caplog.records if r.name == "app.access"]  # type: ignore[attr-defined]
    assert (line["status"], line["outcome"]) == (status, "error")
    assert line["reason"].startswith("upstream_")
    if script is not None:
        assert upstream.wait_until(lambda: upstream.open_streams() == 0, timeout=1.0)
        upstream.script = Script()  # the upstream recovers; the next request is served as usual
        again = client.post("/api/chat/stream", json=ASK, headers=accept, buffered=True)
        text = (
            "".join(e.get("content", "") for e in events(again.get_data()))
            if framing == "sse"
            else again.get_data(as_text=True)
        )
        assert (again.status_code, text) == (200, "Hello, world!")


@pytest.mark.parametrize("framing", ["text", "sse"])
def test_a_stream_that_ends_without_usage(
    make_openai_app: Callable[..., Flask],
    upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
    api: str,
    framing: str,
) -> None:
    caplog.set_level(logging.INFO)
    upstream.script = Script(usage=False)
    client = make_openai_app(OPENAI_API=api).test_client()
    accept = {"Accept": "text/event-stream"} if framing == "sse" else {}
    body = client.post("/api/chat/stream", json=ASK, headers=accept, buffered=True).get_data()
    if framing == "sse":
        assert events(body)[-1] == {"type": "done", "usage": None}
    else:
        assert body == b"Hello, world!"
    [line] = [r.fields for r in caplog.records if r.name == "app.access"]  # type: ignore[attr-defined]
    assert (line["outcome"], line["tokens_out"]) == ("complete", None)
