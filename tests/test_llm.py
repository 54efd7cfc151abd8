from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import httpx2
import pytest

from app.errors import UpstreamError
from app.llm import MAX_EVENT_BYTES, POOL_SHARDS, OpenAILLM, Usage, retry_after, sse_batches
from app.settings import load_settings
from app.validation import ChatRequest

from .conftest import SECRET_KEY
from .fake_upstream import FakeUpstream, Script

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
    reply = make_llm().stream(FULL)
    reply.cancel()  # nothing is connected yet: the connection is shut as soon as it is made
    with pytest.raises(UpstreamError):
        next(iter(reply))
    time.sleep(0.1)
    assert (upstream.requests, upstream.streams) == ([], [])


@pytest.mark.parametrize("reused", [False, True], ids=["new-connection", "kept-alive-connection"])
def test_a_cancel_while_the_headers_are_held_hangs_up_at_once(
    make_llm: Callable[..., OpenAILLM], upstream: FakeUpstream, api: str, reused: bool
) -> None:
    llm = make_llm(OPENAI_API=api, UPSTREAM_TIMEOUT_S="30")
    warm = POOL_SHARDS if reused else 0  # one finished reply per pool leaves a connection in each
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


@pytest.mark.parametrize(
    "event",
    [
        b'{"choices": [{"delta": {"content": 5}}]}',
        b'{"choices": ["x"]}',
        b'{"choices": [{"delta": "x"}]}',
        b'{"choices": 7}',
        b"[1, 2]",
        b'"text"',
    ],
)
def test_chat_events_of_the_wrong_shape_are_malformed(event: bytes) -> None:
    from app.llm import parse_chat

    with pytest.raises(UpstreamError) as caught:
        list(parse_chat(sse_batches([b"data: " + event + b"\n\n"])))
    assert caught.value.reason == "upstream_malformed"


@pytest.mark.parametrize(
    "event",
    [
        b'{"type": "response.output_text.delta", "delta": 5}',
        b'{"type": "response.completed", "response": "done"}',
    ],
)
def test_responses_events_of_the_wrong_shape_are_handled(event: bytes) -> None:
    from app.llm import parse_responses

    parser = parse_responses(sse_batches([b"data: " + event + b"\n\n"]))
    if b"delta" in event:
        with pytest.raises(UpstreamError) as caught:
            list(parser)
        assert caught.value.reason == "upstream_malformed"
    else:
        with pytest.raises(StopIteration) as ended:
            next(parser)
        assert ended.value.value is None


def test_the_connection_is_reused_between_replies(
    make_llm: Callable[..., OpenAILLM], upstream: FakeUpstream
) -> None:
    llm = make_llm()
    for _ in range(3):
        assert list(llm.stream(FULL))[-1] == Usage(9, 4)
    assert len(upstream.requests) == 3
    llm.close()


def events(*chunks: bytes) -> list[bytes]:
    return [data for batch in sse_batches(chunks) for data in batch]


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ((b"data: a\n\n",), [b"a"]),
        ((b"data: a\n\ndata: b\n\n",), [b"a", b"b"]),
        ((b"da", b"ta: a", b"\n", b"\nda", b"ta: b\n\n"), [b"a", b"b"]),
        ((b"data: a\r\n\r\ndata: b\r\n\r\n",), [b"a", b"b"]),
        ((b"event: x\ndata: a\nid: 3\nretry: 5\n\n",), [b"a"]),
        ((b"data: one\ndata: two\n\n",), [b"one\ntwo"]),
        ((b": ping\n\n", b"data:tight\n\n"), [b"tight"]),
        ((b"data: last",), [b"last"]),
        ((b"data: done\n",), [b"done"]),
        ((b"\n\n\n",), []),
        ((b"data: a\r", b"\n\r\ndata: b\r\n", b"\r\n"), [b"a", b"b"]),
        ((b"data: a\n", b"\ndata: b\n\n"), [b"a", b"b"]),
        ((b"data: a", b"bc", b"def\n\n"), [b"abcdef"]),
    ],
)
def test_sse_batches_split_events(chunks: tuple[bytes, ...], expected: list[bytes]) -> None:
    assert events(*chunks) == expected


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "20"}, 20),
        ({"retry-after": "1.2"}, 2),
        ({"retry-after-ms": "1500"}, 2),
        ({"retry-after-ms": "1500", "retry-after": "30"}, 2),
        ({"retry-after-ms": "soon", "retry-after": "3"}, 3),
        ({"retry-after": "0"}, 1),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 1),
        ({}, 1),
    ],
)
def test_retry_after_is_whole_seconds(headers: dict[str, str], seconds: int) -> None:
    assert retry_after(httpx2.Headers(headers)) == seconds


def test_an_endless_event_is_cut_off_at_the_cap() -> None:
    taken = 0

    def endless() -> Iterator[bytes]:
        nonlocal taken
        yield b'data: {"choices": [{"delta": {"content": "'
        while True:
            taken += 4096
            yield b"x" * 4096

    with pytest.raises(UpstreamError) as caught:
        list(sse_batches(endless()))
    assert caught.value.reason == "upstream_malformed"
    assert MAX_EVENT_BYTES - 4096 < taken <= MAX_EVENT_BYTES + 4096  # no more held than the cap


def test_server_without_usage_numbers_gives_none(upstream: FakeUpstream) -> None:
    from app.llm import read_usage

    assert (
        read_usage({"prompt_tokens": "9", "completion_tokens": 2}, "prompt_tokens", "completion_tokens")
        is None
    )
    assert read_usage(None, "a", "b") is None
    assert read_usage({"a": 1, "b": True}, "a", "b") is None
    assert read_usage({"a": 1, "b": -5}, "a", "b") is None
    assert read_usage({"a": 1, "b": 2}, "a", "b") == Usage(1, 2)


def test_chat_stream_with_a_finish_but_no_done_is_complete() -> None:
    from app.llm import parse_chat

    body = b'data: {"choices": [{"delta": {"content": "a"}, "finish_reason": "stop"}]}\n\n'
    parser = parse_chat(sse_batches([body]))
    assert next(parser) == "a"
    with pytest.raises(StopIteration) as ended:
        next(parser)
    assert ended.value.value is None  # no usage was reported


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


def test_reasoning_comes_apart_from_the_answer_in_both_apis() -> None:
    from app.llm import Reasoning, parse_chat, parse_responses

    chat = [
        b'data: {"choices": [{"delta": {"reasoning_content": "Hm"}}]}\n\n'
        b'data: {"choices": [{"delta": {"reasoning": ", yes."}}]}\n\n'
        b'data: {"choices": [{"delta": {"content": "Hi", "reasoning": {"effort": "low"}}}]}\n\n',
        b'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n',
    ]
    items = list(parse_chat(sse_batches(chat)))
    assert items == ["Hm, yes.", "Hi"] and [type(i) for i in items] == [Reasoning, str]
    responses = [
        b'data: {"type": "response.reasoning_summary_text.delta", "delta": "Hm."}\n\n'
        b'data: {"type": "response.output_text.delta", "delta": "Hi"}\n\n'
        b'data: {"type": "response.completed", "response": {}}\n\n'
    ]
    items = list(parse_responses(sse_batches(responses)))
    assert items == ["Hm.", "Hi"] and [type(i) for i in items] == [Reasoning, str]


@pytest.mark.parametrize(
    ("headers", "message", "seconds"),
    [
        ({"retry-after-ms": "1500"}, None, 2),
        ({"retry-after": "4"}, None, 4),
        ({"llm_provider-retry-after": "9"}, None, 9),
        ({}, "Rate limit reached. Please try again in 20s.", 20),
        ({}, "Please try again in 250ms.", 1),
        ({}, "Slow down.", 1),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, "try again in 3.5s", 4),
    ],
)
def test_the_wait_comes_from_headers_or_the_message(
    headers: dict[str, str], message: str | None, seconds: int
) -> None:
    assert retry_after(httpx2.Headers(headers), message) == seconds
