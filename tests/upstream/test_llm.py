from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator

import pytest

from app.errors import UpstreamError
from app.settings import load_settings
from app.upstream.llm import OpenAILLM, Reply
from app.upstream.sse import MAX_EVENT_BYTES
from app.upstream.stream import ChatRequest, Usage

from ..conftest import SECRET_KEY
from ..fake_upstream import FakeUpstream, Script
from ..support.tcp import Listener

HISTORY = (
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "Another?"},
)
FULL = ChatRequest(
    messages=HISTORY, model="gpt-4o-mini", instructions="Be terse.", temperature=0.2, max_tokens=64
)


@pytest.fixture
def make_llm(upstream: FakeUpstream) -> Iterator[Callable[..., OpenAILLM]]:
    """Build OpenAILLMs on the fake upstream (keyword arguments are settings); close them after."""
    made: list[OpenAILLM] = []

    def make(**settings: str) -> OpenAILLM:
        environ = {"OPENAI_API_KEY": SECRET_KEY, "OPENAI_BASE_URL": upstream.base_url} | settings
        made.append(OpenAILLM(load_settings(environ)))
        return made[-1]

    yield make
    for llm in made:
        llm.close()


def test_chat_completions_request_carries_every_option(
    make_llm: Callable[..., OpenAILLM], upstream: FakeUpstream
) -> None:
    items = list(make_llm().stream(FULL))
    assert items == ["Hello", ",", " world", "!", Usage(9, 4)]
    [received] = upstream.requests
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == f"Bearer {SECRET_KEY}"
    assert received.body == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "Be terse."}, *HISTORY],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
        "max_tokens": 64,
    }


def test_responses_request_carries_every_option(
    make_llm: Callable[..., OpenAILLM], upstream: FakeUpstream
) -> None:
    items = list(make_llm(OPENAI_API="responses").stream(FULL))
    assert items == ["Hello", ",", " world", "!", Usage(9, 4)]
    [received] = upstream.requests
    assert received.path == "/v1/responses"
    assert received.body == {
        "model": "gpt-4o-mini",
        "input": list(HISTORY),
        "instructions": "Be terse.",
        "stream": True,
        "temperature": 0.2,
        "max_output_tokens": 64,
    }


def test_optional_fields_are_left_out_when_not_given(
    make_llm: Callable[..., OpenAILLM], upstream: FakeUpstream, api: str
) -> None:
    chat = ChatRequest(messages=({"role": "user", "content": "hi"},), model="m")
    list(make_llm(OPENAI_API=api, OPENAI_STREAM_USAGE="false").stream(chat))
    body = upstream.requests[0].body
    assert not {"temperature", "max_tokens", "max_output_tokens", "instructions", "stream_options"} & set(
        body
    )


def test_stream_usage_off_gives_no_usage(make_llm: Callable[..., OpenAILLM], upstream: FakeUpstream) -> None:
    chat = ChatRequest(messages=({"role": "user", "content": "hi"},), model="m")
    items = list(make_llm(OPENAI_STREAM_USAGE="false").stream(chat))
    assert items == ["Hello", ",", " world", "!", None]


def test_a_keyless_base_url_sends_a_placeholder_key(upstream: FakeUpstream) -> None:
    llm = OpenAILLM(load_settings({"OPENAI_BASE_URL": upstream.base_url}))
    list(llm.stream(FULL))
    llm.close()
    assert upstream.requests[0].headers["authorization"] == "Bearer not-needed"


def test_closing_the_stream_closes_the_upstream_connection(
    make_llm: Callable[..., OpenAILLM], upstream: FakeUpstream, api: str
) -> None:
    upstream.script = Script(stall_after=1)
    reply = make_llm(OPENAI_API=api).stream(FULL)
    assert next(iter(reply)) == "Hello"
    reply.close()
    assert upstream.wait_until(lambda: upstream.open_streams() == 0, timeout=1.0)
    assert upstream.streams[0].ended_by == "client"
    assert reply.sock is None


def test_cancel_from_another_thread_ends_a_silent_stream(
    make_llm: Callable[..., OpenAILLM], upstream: FakeUpstream, api: str
) -> None:
    upstream.script = Script(stall_after=1)
    reply = make_llm(OPENAI_API=api, UPSTREAM_TIMEOUT_S="30").stream(FULL)
    deltas = iter(reply)
    assert next(deltas) == "Hello"
    timer = threading.Timer(0.2, reply.cancel)
    timer.start()
    started = time.monotonic()
    with pytest.raises(UpstreamError) as caught:
        next(deltas)  # blocked on the silent upstream until the cancel
    assert 0.15 < time.monotonic() - started < 2.0
    assert caught.value.reason in ("upstream_broken", "upstream_cut")
    assert upstream.wait_until(lambda: upstream.open_streams() == 0, timeout=1.0)
    reply.cancel()  # again, after the end: nothing to do


def test_a_cancel_before_the_request_is_sent_sends_nothing(
    make_llm: Callable[..., OpenAILLM], upstream: FakeUpstream
) -> None:
    upstream.script = Script(deltas=["a"] * 100, delay=0.05)
    llm = make_llm()
    reply = llm.stream(FULL)
    reply.cancel()  # nothing is connected yet: the connection is shut as soon as it is made
    with pytest.raises(UpstreamError):
        next(iter(reply))
    # A later reply from the same client, read to its end: had the cancelled request been sent,
    # the model would have seen it by now.
    upstream.script = Script()
    assert list(llm.stream(FULL))[-1] == Usage(9, 4)
    assert (len(upstream.requests), len(upstream.streams)) == (1, 1)  # the later reply's alone


@pytest.mark.parametrize("reused", [False, True], ids=["new-connection", "kept-alive-connection"])
def test_a_cancel_while_the_headers_are_held_hangs_up_at_once(
    make_llm: Callable[..., OpenAILLM], upstream: FakeUpstream, api: str, reused: bool
) -> None:
    llm = make_llm(OPENAI_API=api, UPSTREAM_TIMEOUT_S="30")
    warm = 1 if reused else 0  # a finished reply leaves its connection kept alive
    for _ in range(warm):
        assert list(llm.stream(FULL))[-1] == Usage(9, 4)
    assert upstream.connections == warm
    upstream.script = Script(headers_delay=20)
    reply = llm.stream(FULL)
    timer = threading.Timer(0.3, reply.cancel)
    timer.start()
    started = time.monotonic()
    with pytest.raises(UpstreamError):
        next(iter(reply))  # blocked until the cancel: the model has sent nothing, not even headers
    assert time.monotonic() - started < 1.0
    assert upstream.wait_until(lambda: upstream.open_streams() == 0, timeout=1.0)
    stream = upstream.streams[-1]
    assert stream.closed_at is not None and stream.closed_at - stream.opened_at < 1.0
    assert upstream.connections == max(warm, 1)  # a kept-alive connection was used when there was one


def cancel_at_first_request(upstream: FakeUpstream, reply: Reply) -> None:
    """Hang ``reply`` up from another thread (its client leaving) once its request reached the model."""

    def wait_then_cancel() -> None:
        upstream.wait_until(lambda: len(upstream.requests) == 1)
        reply.cancel()

    threading.Thread(target=wait_then_cancel, daemon=True).start()


def test_a_reply_that_hung_up_while_the_sdk_waited_to_retry_sends_no_retry(
    make_llm: Callable[..., OpenAILLM], upstream: FakeUpstream
) -> None:
    llm = make_llm(OPENAI_MAX_RETRIES="3")
    upstream.script = Script(status=500, headers={"Retry-After": "1"})  # retried after 1 s, 3 times
    reply = llm.stream(FULL)
    cancel_at_first_request(upstream, reply)  # answered 500 at once: the client leaves in the wait
    started = time.monotonic()
    with pytest.raises(UpstreamError) as raised:
        next(iter(reply))
    assert raised.value.reason == "client_gone"
    assert 0.9 < time.monotonic() - started < 1.8  # the one wait it was in, not three
    assert (len(upstream.requests), upstream.connections) == (1, 1)  # nothing more reached the model


def test_a_reply_that_hung_up_while_the_model_held_its_headers_sends_no_retry(
    make_llm: Callable[..., OpenAILLM], upstream: FakeUpstream
) -> None:
    llm = make_llm(OPENAI_MAX_RETRIES="3", UPSTREAM_TIMEOUT_S="30")
    upstream.script = Script(headers_delay=20)
    reply = llm.stream(FULL)
    cancel_at_first_request(upstream, reply)  # while the model holds its headers
    started = time.monotonic()
    with pytest.raises(UpstreamError) as raised:
        next(iter(reply))
    assert raised.value.reason == "client_gone"
    assert time.monotonic() - started < 0.8  # at once: no wait before a retry
    assert (len(upstream.requests), upstream.connections) == (1, 1)


def test_the_connection_is_reused_between_replies(
    make_llm: Callable[..., OpenAILLM], upstream: FakeUpstream
) -> None:
    llm = make_llm()
    for _ in range(3):
        assert list(llm.stream(FULL))[-1] == Usage(9, 4)
    assert len(upstream.requests) == 3
    llm.close()


def test_platform_headers_are_built_before_the_first_request(
    make_llm: Callable[..., OpenAILLM], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK finds its platform by running `uname` in a subprocess on first use; a burst of
    # first requests in a busy worker would each fork one. The client must do it up front.
    from openai import _base_client

    _base_client.platform_headers.cache_clear()
    llm = make_llm()

    def no_subprocess_now() -> str:
        raise AssertionError("platform detected during a request")

    monkeypatch.setattr(_base_client, "get_platform", no_subprocess_now)
    assert list(llm.stream(FULL))[-1] == Usage(9, 4)


def test_an_event_past_the_cap_is_a_malformed_reply(
    make_llm: Callable[..., OpenAILLM], upstream: FakeUpstream
) -> None:
    upstream.script = Script(deltas=["x" * 2 * MAX_EVENT_BYTES])
    with pytest.raises(UpstreamError) as caught:
        list(make_llm().stream(FULL))
    assert caught.value.reason == "upstream_malformed"


@pytest.mark.parametrize("status", [429, 400, 500])
def test_a_reply_refused_with_a_status_lets_go_of_its_connection(
    make_llm: Callable[..., OpenAILLM], upstream: FakeUpstream, status: int
) -> None:
    # The SDK read the error answer and gave the connection back to the pool, where the next
    # reply takes it: a cancel of the refused reply must not shut that reply's stream down.
    llm = make_llm()
    upstream.script = Script(status=status)
    refused = llm.stream(FULL)
    with pytest.raises(UpstreamError):
        next(iter(refused))
    assert refused.sock is None
    upstream.script = Script(deltas=["a", "b"], delay=0.05)
    served = llm.stream(FULL)
    deltas = iter(served)
    assert next(deltas) == "a"
    refused.cancel()  # what the relay's close does for a reply that ended in error
    assert [*deltas][:1] == ["b"]


class ForwardProxy:
    """An HTTP proxy on loopback, as ``HTTP_PROXY`` names one: each connection's request (in the
    absolute form proxies get) goes to its host, and the bytes then flow both ways as they come."""

    def __init__(self) -> None:
        self.request_lines: list[str] = []
        self.listener = Listener(self._serve)
        self.url = self.listener.url

    def _serve(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n" not in head:
            head += client.recv(65536)
        line, rest = head.split(b"\r\n", 1)
        method, target, version = line.decode().split(" ")
        self.request_lines.append(line.decode())
        url = urllib.parse.urlsplit(target)
        with client, socket.create_connection((url.hostname, url.port)) as upstream:
            upstream.sendall(f"{method} {url.path} {version}\r\n".encode() + rest)
            ahead = threading.Thread(target=pipe, args=(client, upstream), daemon=True)
            ahead.start()
            pipe(upstream, client)
            ahead.join()  # both ways ended: each side closed its own

    def close(self) -> None:
        self.listener.close()


def pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[ForwardProxy]:
    server = ForwardProxy()
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.url)
    yield server
    server.close()


def test_a_reply_goes_through_the_environments_proxy_and_hangs_up_there_too(
    make_llm: Callable[..., OpenAILLM], upstream: FakeUpstream, proxy: ForwardProxy
) -> None:
    llm = make_llm(UPSTREAM_TIMEOUT_S="30")
    assert list(llm.stream(FULL)) == ["Hello", ",", " world", "!", Usage(9, 4)]
    assert proxy.request_lines == [f"POST {upstream.base_url}/chat/completions HTTP/1.1"]
    upstream.script = Script(headers_delay=20)  # the model holds its headers: cancelled meanwhile
    reply = llm.stream(FULL)
    threading.Timer(0.3, reply.cancel).start()
    started = time.monotonic()
    with pytest.raises(UpstreamError):
        next(iter(reply))
    assert time.monotonic() - started < 1.0  # the proxied connection was shut at once
    assert upstream.wait_until(lambda: upstream.open_streams() == 0, timeout=2.0)
