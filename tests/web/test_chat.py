from __future__ import annotations

import json
import threading
from collections.abc import Callable, Generator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.errors import UpstreamTimeout
from app.upstream.stream import ChatRequest, Delta

from ..conftest import FakeLLM
from ..fake_upstream import FakeUpstream, Script

ROUTES = ["/api/chat", "/api/chat/stream"]
ASK = {"message": "Say hello"}


def test_stream_route_relays_the_reply_with_spec_headers(openai_client: FlaskClient) -> None:
    response = openai_client.post("/api/chat/stream", json=ASK)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert "Content-Length" not in response.headers
    assert len(response.headers["X-Request-ID"]) == 32
    assert response.get_data(as_text=True) == "Hello, world!"


def test_json_route_answers_with_reply_model_usage_and_ids(openai_client: FlaskClient) -> None:
    response = openai_client.post("/api/chat", json=ASK)
    assert response.status_code == 200
    body = response.get_json()
    assert body == {
        "reply": "Hello, world!",
        "model": "gpt-4o-mini",
        "usage": {"input_tokens": 9, "output_tokens": 4},
        "request_id": response.headers["X-Request-ID"],
    }
    upstream_part, total_part = response.headers["Server-Timing"].split(", ")
    assert upstream_part.startswith("upstream;dur=") and total_part.startswith("total;dur=")
    assert float(total_part.split("=")[1]) >= float(upstream_part.split("=")[1]) >= 0


def test_both_routes_give_the_same_text(openai_client: FlaskClient, upstream: FakeUpstream) -> None:
    upstream.script = Script(deltas=["Ünï", "cödé ", "🤖", " and ", "日本語"])
    whole = openai_client.post("/api/chat", json=ASK).get_json()["reply"]
    streamed = openai_client.post("/api/chat/stream", json=ASK).get_data(as_text=True)
    assert whole == streamed == "Ünïcödé 🤖 and 日本語"


def test_each_delta_is_one_chunk_of_valid_utf8(openai_client: FlaskClient, upstream: FakeUpstream) -> None:
    upstream.script = Script(deltas=["é", "🤖", "日本", "!"])
    response = openai_client.post("/api/chat/stream", json=ASK, buffered=False)
    chunks = list(response.response)
    response.close()
    assert chunks == ["é".encode(), "🤖".encode(), "日本".encode(), b"!"]
    for chunk in chunks:
        chunk.decode("utf-8")


def test_a_surrogate_pair_split_across_deltas_is_joined(client: FlaskClient, fake_llm: FakeLLM) -> None:
    fake_llm.deltas = ["robot \ud83e", "\udd16 ok", " \udc00"]
    response = client.post("/api/chat/stream", json=ASK, buffered=False)
    chunks = list(response.response)
    response.close()
    assert chunks == [b"robot ", "🤖 ok".encode(), " \ufffd".encode()]


def test_model_from_the_request_is_used(
    make_openai_app: Callable[..., Flask], upstream: FakeUpstream
) -> None:
    client = make_openai_app(ALLOWED_MODELS="gpt-4o").test_client()
    body = client.post("/api/chat", json={**ASK, "model": "gpt-4o"}).get_json()
    assert body["model"] == "gpt-4o"
    assert upstream.requests[0].body["model"] == "gpt-4o"


def test_a_reply_without_usage_reports_null(openai_client: FlaskClient, upstream: FakeUpstream) -> None:
    upstream.script = Script(usage=False)
    body = openai_client.post("/api/chat", json=ASK).get_json()
    assert body["reply"] == "Hello, world!" and body["usage"] is None


def test_an_empty_reply_is_an_empty_body(openai_client: FlaskClient, upstream: FakeUpstream) -> None:
    upstream.script = Script(deltas=[])
    assert openai_client.post("/api/chat/stream", json=ASK).get_data() == b""
    assert openai_client.post("/api/chat", json=ASK).get_json()["reply"] == ""


def test_no_retry_happens_after_a_delta(
    make_openai_app: Callable[..., Flask], upstream: FakeUpstream
) -> None:
    upstream.script = Script(cut_after=1)
    client = make_openai_app(OPENAI_MAX_RETRIES="3").test_client()
    body = client.post("/api/chat/stream", json=ASK).get_data(as_text=True)
    assert body.endswith("[error: The connection to the model broke.]")
    assert len(upstream.requests) == 1


def test_retries_before_the_first_byte_follow_the_setting(
    make_openai_app: Callable[..., Flask], upstream: FakeUpstream
) -> None:
    upstream.script = Script(status=500, headers={"retry-after-ms": "1"})
    client = make_openai_app(OPENAI_MAX_RETRIES="2").test_client()
    assert client.post("/api/chat", json=ASK).status_code == 502
    assert len(upstream.requests) == 3


def test_closing_the_body_early_closes_the_upstream(
    openai_client: FlaskClient, upstream: FakeUpstream
) -> None:
    upstream.script = Script(deltas=["a", "b", "c"], stall_after=2)
    response = openai_client.post("/api/chat/stream", json=ASK, buffered=False)
    body = iter(response.response)
    assert next(body) == b"a"
    response.close()
    assert upstream.wait_until(lambda: upstream.open_streams() == 0, timeout=1.0)
    assert upstream.streams[0].ended_by == "client"


def test_a_client_gone_before_the_body_started_still_closes_the_upstream(
    openai_client: FlaskClient, upstream: FakeUpstream
) -> None:
    upstream.script = Script(stall_after=1)
    response = openai_client.post("/api/chat/stream", json=ASK, buffered=False)
    assert upstream.open_streams() == 1
    response.close()  # the server never asked the body for its first chunk
    assert upstream.wait_until(lambda: upstream.open_streams() == 0, timeout=1.0)


def test_an_unexpected_error_mid_stream_is_reported_in_band(
    client: FlaskClient, fake_llm: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    fake_llm.fail_after = 1
    fake_llm.error = KeyError("surprise")
    response = client.post("/api/chat/stream", json=ASK)
    assert response.get_data(as_text=True) == "Hi\n[error: The server hit an unexpected error.]"
    assert fake_llm.closed == 1
    [bug] = [r for r in caplog.records if r.levelname == "ERROR"]  # logged once, with its traceback
    assert bug.getMessage() == "unhandled KeyError while streaming a reply"
    assert bug.exc_info is not None and bug.exc_info[1] is fake_llm.error


def test_an_unexpected_error_before_the_first_delta_is_a_json_500(
    client: FlaskClient, fake_llm: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    fake_llm.fail_after = 0
    fake_llm.error = KeyError("surprise")
    for route in ROUTES:
        caplog.clear()
        response = client.post(route, json=ASK)
        assert response.status_code == 500
        assert response.get_json() == {"error": "The server hit an unexpected error; it has been logged."}
        [bug] = [r for r in caplog.records if r.levelname == "ERROR"]
        assert bug.getMessage() == "unhandled KeyError while serving the request"
        assert bug.exc_info is not None and "Traceback" not in response.get_data(as_text=True)


def test_the_scripted_model_sees_the_parsed_request(client: FlaskClient, fake_llm: FakeLLM) -> None:
    body: dict[str, Any] = {"message": "hi", "instructions": "Be brief.", "temperature": 0, "max_tokens": 9}
    assert client.post("/api/chat", json=body).get_json()["reply"] == "Hi there"
    [chat] = fake_llm.calls
    assert chat.instructions == "Be brief." and chat.temperature == 0.0 and chat.max_tokens == 9


@pytest.mark.parametrize("route", ROUTES)
def test_both_routes_repair_a_lone_surrogate_the_same_way(
    client: FlaskClient, fake_llm: FakeLLM, route: str
) -> None:
    fake_llm.deltas = ["ok ", "\udc00", "!"]
    response = client.post(route, json=ASK)
    text = response.get_json()["reply"] if route == "/api/chat" else response.get_data(as_text=True)
    assert text == "ok \ufffd!"


SSE = {"Accept": "text/event-stream"}


def sse_events(body: bytes) -> list[Any]:
    """The events of an SSE body: parsed data objects, and "ping" for each comment."""
    found: list[Any] = []
    for block in body.decode().split("\n\n"):
        if block.startswith("data: "):
            found.append(json.loads(block[6:]))
        elif block.startswith(": ping"):
            found.append("ping")
        else:
            assert block == "", block
    return found


def test_sse_sends_a_token_event_per_delta_then_done(
    openai_client: FlaskClient, upstream: FakeUpstream
) -> None:
    upstream.script = Script(deltas=["Hé", "llo", " 🤖"])
    response = openai_client.post("/api/chat/stream", json=ASK, headers=SSE)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert sse_events(response.get_data()) == [
        {
            "type": "metadata",
            "request_id": response.headers["X-Request-ID"],
            "model": "gpt-4o-mini",
            "conversation_id": None,
            "message_id": None,
        },
        {"type": "token", "content": "Hé"},
        {"type": "token", "content": "llo"},
        {"type": "token", "content": " 🤖"},
        {"type": "done", "usage": {"input_tokens": 9, "output_tokens": 3}, "status": "complete"},
    ]
    tokens = "".join(e["content"] for e in sse_events(response.get_data()) if e["type"] == "token")
    assert tokens == openai_client.post("/api/chat", json=ASK).get_json()["reply"]


def test_sse_each_event_is_its_own_chunk(client: FlaskClient, fake_llm: FakeLLM) -> None:
    response = client.post(
        "/api/chat/stream", json=ASK, headers={**SSE, "X-Request-ID": "r1"}, buffered=False
    )
    chunks = list(response.response)
    response.close()
    assert chunks == [
        b'data: {"type":"metadata","request_id":"r1","model":"gpt-4o-mini",'
        b'"conversation_id":null,"message_id":null}\n\n',
        b'data: {"type":"token","content":"Hi"}\n\n',
        b'data: {"type":"token","content":" there"}\n\n',
        b'data: {"type":"done","usage":{"input_tokens":3,"output_tokens":2},"status":"complete"}\n\n',
    ]


def test_sse_escapes_half_a_surrogate_pair(client: FlaskClient, fake_llm: FakeLLM) -> None:
    fake_llm.deltas = ["robot \ud83e", "\udd16"]
    body = client.post("/api/chat/stream", json=ASK, headers=SSE).get_data()
    body.decode("utf-8")  # valid on the wire
    tokens = "".join(e["content"] for e in sse_events(body) if e["type"] == "token")
    # A browser's strings are UTF-16, where the two halves join into one character.
    assert tokens.encode("utf-16", "surrogatepass").decode("utf-16") == "robot 🤖"


def test_sse_pings_during_an_upstream_silence(app: Flask, client: FlaskClient) -> None:
    speak = threading.Event()  # the model is silent until the test has counted its pings

    class Silent:
        def stream(self, chat: ChatRequest) -> Generator[Delta]:
            yield "a"
            assert speak.wait(5.0)
            raise UpstreamTimeout(
                "The model stopped sending for longer than the upstream timeout.", reason="upstream_timeout"
            )

    app.extensions["llm"] = Silent()
    app.config["SSE_PING_S"] = 0.01
    response = client.post("/api/chat/stream", json=ASK, headers=SSE, buffered=False)
    body = iter(response.response)
    assert [e["type"] for e in sse_events(next(body))] == ["metadata"]
    assert sse_events(next(body)) == [{"type": "token", "content": "a"}]
    assert [next(body) for _ in range(3)] == [b": ping\n\n"] * 3  # one per SSE_PING_S of silence
    speak.set()
    events = sse_events(b"".join(body))
    assert all(e == "ping" for e in events[:-1])  # until the model's failure came through
    assert events[-1] == {
        "type": "error",
        "message": "The model stopped sending for longer than the upstream timeout.",
    }
    response.close()


def test_sse_client_leaving_during_a_silence_closes_the_upstream(
    make_openai_app: Callable[..., Flask], upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    upstream.script = Script(stall_after=1)
    client = make_openai_app(SSE_PING_S="0.05", UPSTREAM_TIMEOUT_S="30").test_client()
    response = client.post("/api/chat/stream", json=ASK, headers=SSE, buffered=False)
    body = iter(response.response)
    assert next(body).startswith(b'data: {"type":"metadata",')
    assert next(body) == b'data: {"type":"token","content":"Hello"}\n\n'
    assert next(body) == b": ping\n\n"  # the silence is noticed while the model says nothing
    response.close()  # the server's next write failed: the client is gone
    assert upstream.wait_until(lambda: upstream.open_streams() == 0, timeout=1.0)
    [line] = [r for r in caplog.records if r.name == "app.access"]
    assert (line.fields["framing"], line.fields["outcome"]) == ("sse", "disconnected")  # type: ignore[attr-defined]


def test_plain_text_stays_the_default(client: FlaskClient, fake_llm: FakeLLM) -> None:
    for accept in ("", "*/*", "text/plain", "application/json"):
        response = client.post("/api/chat/stream", json=ASK, headers={"Accept": accept})
        assert (response.mimetype, response.get_data()) == ("text/plain", b"Hi there")


@pytest.mark.parametrize("accept", ["text/plain", "text/event-stream", "application/json"])
def test_finished_replies_leave_their_connection_for_reuse(
    make_openai_app: Callable[..., Flask], upstream: FakeUpstream, accept: str
) -> None:
    client = make_openai_app().test_client()
    route = "/api/chat" if accept == "application/json" else "/api/chat/stream"
    for _ in range(64):  # twice round the 32 connection pools
        assert client.post(route, json=ASK, headers={"Accept": accept}, buffered=True).status_code == 200
    assert upstream.connections <= 32
