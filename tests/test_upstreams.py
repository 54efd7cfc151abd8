"""What real upstreams do that is no fault: reasoning text, a long silent start, errors after it,
in both OpenAI APIs and all three framings (plain text, SSE, the JSON route)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from .fake_upstream import FakeUpstream, Script
from .test_faults import ASK, FRAMINGS, events, metadata

THOUGHTS = ["Let me think", " about it."]
UNREADABLE_RESPONSE = "The model service sent a response that could not be read."


def timed(response: Any) -> list[tuple[float, bytes]]:
    """Each chunk of an unbuffered test response with the time it came, from the request's start."""
    started = time.monotonic()
    arrivals = [(time.monotonic() - started, chunk) for chunk in response.response]
    response.close()
    return arrivals


# Chat Completions names the field reasoning_content (vLLM, DeepSeek) or reasoning (Ollama); the
# Responses API sends response.reasoning_summary_text.delta events.
@pytest.mark.parametrize(
    ("api", "field"),
    [("chat", "reasoning_content"), ("chat", "reasoning"), ("responses", "reasoning_content")],
)
@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_reasoning_goes_only_into_sse_reasoning_events(
    make_openai_app: Callable[..., Flask],
    upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
    api: str,
    framing: str,
    field: str,
) -> None:
    caplog.set_level(logging.INFO)
    upstream.script = Script(reasoning=THOUGHTS, reasoning_field=field)
    route, headers = FRAMINGS[framing]
    client = make_openai_app(OPENAI_API=api).test_client()
    response = client.post(route, json=ASK, headers=headers, buffered=True)
    assert response.status_code == 200
    if framing == "sse":
        assert events(response.get_data()) == [
            metadata(response),
            {"type": "reasoning", "content": "Let me think"},
            {"type": "reasoning", "content": " about it."},
            *({"type": "token", "content": text} for text in ["Hello", ",", " world", "!"]),
            {"type": "done", "usage": {"input_tokens": 9, "output_tokens": 4}, "status": "complete"},
        ]
    elif framing == "json":
        assert response.get_json()["reply"] == "Hello, world!"
    else:
        assert response.get_data() == b"Hello, world!"
    [line] = [r.fields for r in caplog.records if r.name == "app.access"]  # type: ignore[attr-defined]
    assert (line["chars"], line["reasoning_chars"], line["outcome"]) == (13, 22, "complete")


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_a_model_silent_past_the_wait_gets_its_response_started(
    make_openai_app: Callable[..., Flask], upstream: FakeUpstream, api: str, framing: str
) -> None:
    upstream.script = Script(first_delay=0.8)
    app = make_openai_app(OPENAI_API=api, FIRST_DELTA_WAIT_S="0.2", SSE_PING_S="0.25")
    route, headers = FRAMINGS[framing]
    started = time.monotonic()
    response = app.test_client().post(route, json=ASK, headers=headers, buffered=False)
    returned = time.monotonic() - started
    arrivals = timed(response)
    body = b"".join(chunk for _, chunk in arrivals)
    if framing == "json":  # unchanged: the whole reply, when it is whole
        assert returned > 0.8 and json.loads(body)["reply"] == "Hello, world!"
        return
    assert 0.15 < returned < 0.5  # status and headers after the wait, not after the model
    assert response.status_code == 200
    first_at, first = arrivals[0]
    assert first_at < 0.1  # the first chunk is out at once: an empty one (headers), or the metadata
    texts = [(at, chunk) for at, chunk in arrivals if b"Hello" in chunk]
    assert texts and texts[0][0] + returned > 0.75  # the answer when the model sent it
    if framing == "text":
        assert first == b"" and body == b"Hello, world!"
        return
    assert events(first) == [metadata(response)]
    pings = [at + returned for at, chunk in arrivals if chunk == b": ping\n\n"]
    assert len(pings) == 2  # at 0.45 s and 0.7 s: every SSE_PING_S of silence
    assert 0.4 < pings[0] < 0.6
    assert [e["type"] for e in events(body)] == ["metadata", "token", "token", "token", "token", "done"]


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_a_failure_after_the_wait_is_reported_in_band(
    make_openai_app: Callable[..., Flask],
    upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
    api: str,
    framing: str,
) -> None:
    caplog.set_level(logging.INFO)
    upstream.script = Script(
        first_delay=0.5, error_after=0, error_code="rate_limit_exceeded", error_event="failed"
    )
    app = make_openai_app(OPENAI_API=api, FIRST_DELTA_WAIT_S="0.1")
    route, headers = FRAMINGS[framing]
    response = app.test_client().post(route, json=ASK, headers=headers, buffered=True)
    sentence = "The model service is rate limiting requests; retry in 1 s."
    if framing == "json":
        assert (response.status_code, response.get_json()) == (429, {"error": sentence})
        assert response.headers["Retry-After"] == "1"
    elif framing == "sse":
        assert response.status_code == 200
        assert events(response.get_data()) == [metadata(response), {"type": "error", "message": sentence}]
    else:
        assert (response.status_code, response.get_data(as_text=True)) == (200, f"\n[error: {sentence}]")
    [line] = [r.fields for r in caplog.records if r.name == "app.access"]  # type: ignore[attr-defined]
    assert (line["outcome"], line["reason"]) == ("error", "upstream_rate_limited")


def test_the_wait_for_the_first_delta_is_checked_at_start_up(make_openai_app: Callable[..., Flask]) -> None:
    from app.settings import SettingsError

    with pytest.raises(
        SettingsError, match=r"FIRST_DELTA_WAIT_S must be a number from 0 to 3600; got 'soon'\."
    ):
        make_openai_app(FIRST_DELTA_WAIT_S="soon")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            b"HTTP/1.1 2x0 OK\r\ncontent-length: 2\r\n\r\n{}",
            UNREADABLE_RESPONSE,
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"content-length: 20\r\ncontent-length: 30\r\n\r\ndata: [DONE]\n\n",
            UNREADABLE_RESPONSE,
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            b"+e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n",
            UNREADABLE_RESPONSE,
        ),
        (  # a good answer whose connection then closes: read to its end, it counts
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"
            b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
            b'"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\ndata: [DONE]\n\n',
            None,
        ),
    ],
    ids=["status", "two-lengths", "chunk-size", "until-close"],
)
def test_an_answer_that_breaks_the_http_grammar_is_a_502_sent_once(
    make_openai_app: Callable[..., Flask], upstream: FakeUpstream, raw: bytes, message: str | None
) -> None:
    upstream.script = Script(raw_response=raw)
    response = make_openai_app().test_client().post("/api/chat", json=ASK)
    if message is None:
        assert (response.status_code, response.get_json()["reply"]) == (200, "Hi")
    else:
        assert (response.status_code, response.get_json()["error"]) == (502, message)
    assert len(upstream.requests) == 1  # never sent again
