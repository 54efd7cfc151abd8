"""Every upstream fault, in both OpenAI APIs and all three framings (plain text, SSE, the JSON
route): what the client gets, the one access line it leaves, and the next request served."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from .conftest import SECRET_KEY
from .fake_upstream import FakeUpstream, Script

ASK = {"message": "Say hello"}
BROKE = "The connection to the model broke."
UNREADABLE = "The model sent an event that could not be read."
MISCONFIGURED = "The service is misconfigured: the model provider rejected its API key."
SILENT = "The model stopped sending for longer than the upstream timeout."
TOO_LONG = (
    "The conversation is too long for the model: shorten it (fewer or shorter messages) or start a new one."
)
OPENAI_WAIT = "Rate limit reached for gpt-4o-mini on tokens per min. Please try again in 5.2s."
TIMEOUT_S = 0.4


@dataclass
class Fault:
    """An upstream fault and what the client must see."""

    name: str
    script: Script | None  # None: nothing listens at the upstream's address
    status: int  # before the first delta; 200 when it strikes after it
    sentence: str
    headers: dict[str, str] = field(default_factory=dict)
    sent: tuple[str, ...] = ()  # the deltas relayed before a failure after the first delta
    stall: bool = False  # a silence: it takes the upstream timeout

    @property
    def json_status(self) -> int:
        """What /api/chat answers, which has nothing sent when anything fails."""
        if self.status != 200:
            return self.status
        if "rate-limit" in self.name:
            return 429
        return 504 if self.stall else 502


FAULTS = [
    Fault("refused", None, 502, "The model service could not be reached."),
    # An upstream that quotes our key back, as OpenAI's 401 does in part: none of it is passed on.
    Fault(
        "401",
        Script(status=401, error_message=f"Incorrect API key provided: {SECRET_KEY}"),
        502,
        MISCONFIGURED,
    ),
    Fault("403", Script(status=403), 502, MISCONFIGURED),
    Fault(
        "unknown-model", Script(status=404), 502, "The model provider does not offer the model 'gpt-4o-mini'."
    ),
    Fault(
        "429-retry-after",
        Script(status=429, headers={"retry-after": "7"}),
        429,
        "The model service is rate limiting requests; retry in 7 s.",
        {"Retry-After": "7"},
    ),
    Fault(
        "429-retry-after-ms",
        Script(status=429, headers={"retry-after-ms": "2500"}),
        429,
        "The model service is rate limiting requests; retry in 3 s.",
        {"Retry-After": "3"},
    ),
    Fault(
        "429-llm-provider-retry-after",  # LiteLLM renames the provider's header
        Script(status=429, headers={"llm_provider-retry-after": "12"}),
        429,
        "The model service is rate limiting requests; retry in 12 s.",
        {"Retry-After": "12"},
    ),
    Fault(
        "429-wait-in-the-message",
        Script(status=429, error_message=OPENAI_WAIT, error_code="rate_limit_exceeded"),
        429,
        "The model service is rate limiting requests; retry in 6 s.",
        {"Retry-After": "6"},
    ),
    Fault("400", Script(status=400), 502, "The model provider refused the request (HTTP 400)."),
    Fault("400-context-length", Script(status=400, error_code="context_length_exceeded"), 400, TOO_LONG),
    Fault(  # vLLM, and LiteLLM's ContextWindowExceededError: no code, only the words
        "400-context-length-in-words",
        Script(
            status=400, error_message="This model's maximum context length is 8192 tokens.", error_code="400"
        ),
        400,
        TOO_LONG,
    ),
    Fault("500", Script(status=500), 502, "The model provider refused the request (HTTP 500)."),
    Fault("503", Script(status=503), 502, "The model provider refused the request (HTTP 503)."),
    Fault(
        "stall-before-headers", Script(no_headers=True), 504, "The model did not answer in time.", stall=True
    ),
    Fault("stall-before-first-delta", Script(first_delay=5), 504, SILENT, stall=True),
    Fault("cut-before-first-delta", Script(cut_after=0), 502, BROKE),
    Fault("malformed-first-event", Script(malformed_after=0), 502, UNREADABLE),
    Fault(
        "error-event-first",
        Script(error_after=0, error_code="server_error"),
        502,
        "The model reported an error (server_error).",
    ),
    # Responses API: response.failed (in Chat Completions the same script sends an error object).
    Fault(
        "rate-limit-failed-event-first",
        Script(
            error_after=0, error_code="rate_limit_exceeded", error_message=OPENAI_WAIT, error_event="failed"
        ),
        429,
        "The model service is rate limiting requests; retry in 6 s.",
        {"Retry-After": "6"},
    ),
    Fault(
        "rate-limit-error-event-first",
        Script(error_after=0, error_code="rate_limit_exceeded", error_message="Slow down."),
        429,
        "The model service is rate limiting requests; retry in 1 s.",
        {"Retry-After": "1"},
    ),
    Fault(
        "context-length-failed-event-first",
        Script(error_after=0, error_code="context_length_exceeded", error_event="failed"),
        400,
        TOO_LONG,
    ),
    Fault(
        "context-length-error-event-first",
        Script(error_after=0, error_code="context_length_exceeded"),
        400,
        TOO_LONG,
    ),
    Fault("stall-mid-stream", Script(stall_after=2), 200, SILENT, sent=("Hello", ","), stall=True),
    Fault("cut-mid-stream", Script(cut_after=2), 200, BROKE, sent=("Hello", ",")),
    Fault("malformed-mid-stream", Script(malformed_after=2), 200, UNREADABLE, sent=("Hello", ",")),
    Fault(
        "error-event-mid-stream",
        Script(error_after=2, error_code="server_error"),
        200,
        "The model reported an error (server_error).",
        sent=("Hello", ","),
    ),
    Fault(
        "rate-limit-event-mid-stream",
        Script(
            error_after=2, error_code="rate_limit_exceeded", error_message=OPENAI_WAIT, error_event="failed"
        ),
        200,
        "The model service is rate limiting requests; retry in 6 s.",
        sent=("Hello", ","),
    ),
    Fault(
        "ends-without-its-end",
        Script(finish=False),
        200,
        "The model's stream ended before the reply was complete.",
        sent=("Hello", ",", " world", "!"),
    ),
]
FRAMINGS = {"text": ("/api/chat/stream", {}), "sse": ("/api/chat/stream", {"Accept": "text/event-stream"})}
FRAMINGS["json"] = ("/api/chat", {})


def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def fault_client(
    make_openai_app: Callable[..., Flask], upstream: FakeUpstream, fault: Fault, **settings: str
) -> FlaskClient:
    """A client of an app whose upstream produces ``fault``."""
    settings = {"UPSTREAM_TIMEOUT_S": str(TIMEOUT_S), **settings}
    if fault.script is None:
        settings["OPENAI_BASE_URL"] = refused_url()
    else:
        upstream.script = fault.script
    return make_openai_app(**settings).test_client()  # type: ignore[no-any-return]


def events(body: bytes) -> list[Any]:
    return [json.loads(block[6:]) for block in body.decode().split("\n\n") if block.startswith("data: ")]


def metadata(response: Any) -> dict[str, Any]:
    """The first SSE event of every reply."""
    return {
        "type": "metadata",
        "request_id": response.headers["X-Request-ID"],
        "model": "gpt-4o-mini",
        "conversation_id": None,
        "message_id": None,
    }


def reply_text(framing: str, body: bytes) -> str:
    if framing == "sse":
        return "".join(e.get("content", "") for e in events(body))
    return str(json.loads(body)["reply"]) if framing == "json" else body.decode()


@pytest.mark.parametrize("framing", list(FRAMINGS))
@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_upstream_fault(
    make_openai_app: Callable[..., Flask],
    upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
    api: str,
    framing: str,
    fault: Fault,
) -> None:
    caplog.set_level(logging.INFO)
    client = fault_client(make_openai_app, upstream, fault, OPENAI_API=api)
    route, headers = FRAMINGS[framing]
    started = time.monotonic()
    response = client.post(route, json=ASK, headers=headers, buffered=True)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0
    if fault.stall:
        assert elapsed > TIMEOUT_S * 0.9  # it waited for the timeout, no less
    status = fault.json_status if framing == "json" else fault.status
    assert response.status_code == status
    if status != 200:
        assert response.mimetype == "application/json"
        assert response.get_json() == {"error": fault.sentence}
        for header, value in fault.headers.items():
            assert response.headers[header] == value
    elif framing == "sse":
        assert events(response.get_data()) == [
            metadata(response),
            *({"type": "token", "content": text} for text in fault.sent),
            {"type": "error", "message": fault.sentence},
        ]
    else:
        assert response.get_data(as_text=True) == "".join(fault.sent) + f"\n[error: {fault.sentence}]"
    assert "SENTINEL" not in response.get_data(as_text=True)
    [line] = [r.fields for r in caplog.records if r.name == "app.access"]  # type: ignore[attr-defined]
    assert (line["status"], line["outcome"]) == (status, "error")
    assert line["reason"].startswith("upstream_")
    if fault.script is not None:
        assert upstream.wait_until(lambda: upstream.open_streams() == 0, timeout=1.0)
        upstream.script = Script()  # the upstream recovers; the next request is served as usual
        again = client.post(route, json=ASK, headers=headers, buffered=True)
        assert (again.status_code, reply_text(framing, again.get_data())) == (200, "Hello, world!")


@pytest.mark.parametrize("framing", list(FRAMINGS))
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
    route, headers = FRAMINGS[framing]
    body = client.post(route, json=ASK, headers=headers, buffered=True).get_data()
    assert reply_text(framing, body) == "Hello, world!"
    if framing == "sse":
        assert events(body)[-1] == {"type": "done", "usage": None, "status": "complete"}
    if framing == "json":
        assert json.loads(body)["usage"] is None
    [line] = [r.fields for r in caplog.records if r.name == "app.access"]  # type: ignore[attr-defined]
    assert (line["outcome"], line["tokens_out"]) == ("complete", None)
