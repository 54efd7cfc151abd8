from __future__ import annotations

import httpx2
import pytest

from app.errors import UpstreamError
from app.upstream import sse
from app.upstream.events import in_band_error, retry_after
from app.upstream.stream import Usage


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
    from app.upstream.events import read_chat

    with pytest.raises(UpstreamError) as caught:
        list(read_chat(sse.batches([b"data: " + event + b"\n\n"])))
    assert caught.value.reason == "upstream_malformed"


@pytest.mark.parametrize(
    "event",
    [
        b'{"type": "response.output_text.delta", "delta": 5}',
        b'{"type": "response.completed", "response": "done"}',
    ],
)
def test_responses_events_of_the_wrong_shape_are_handled(event: bytes) -> None:
    from app.upstream.events import read_responses

    parser = read_responses(sse.batches([b"data: " + event + b"\n\n"]))
    if b"delta" in event:
        with pytest.raises(UpstreamError) as caught:
            list(parser)
        assert caught.value.reason == "upstream_malformed"
    else:
        with pytest.raises(StopIteration) as ended:
            next(parser)
        assert ended.value.value is None


def test_server_without_usage_numbers_gives_none() -> None:
    from app.upstream.events import read_usage

    assert (
        read_usage({"prompt_tokens": "9", "completion_tokens": 2}, "prompt_tokens", "completion_tokens")
        is None
    )
    assert read_usage(None, "a", "b") is None
    assert read_usage({"a": 1, "b": True}, "a", "b") is None
    assert read_usage({"a": 1, "b": -5}, "a", "b") is None
    assert read_usage({"a": 1, "b": 2}, "a", "b") == Usage(1, 2)


def test_chat_stream_with_a_finish_but_no_done_is_complete() -> None:
    from app.upstream.events import read_chat

    body = b'data: {"choices": [{"delta": {"content": "a"}, "finish_reason": "stop"}]}\n\n'
    parser = read_chat(sse.batches([body]))
    assert next(parser) == "a"
    with pytest.raises(StopIteration) as ended:
        next(parser)
    assert ended.value.value is None  # no usage was reported


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


def test_reasoning_comes_apart_from_the_answer_in_both_apis() -> None:
    from app.upstream.events import read_chat, read_responses
    from app.upstream.stream import Reasoning

    chat = [
        b'data: {"choices": [{"delta": {"reasoning_content": "Hm"}}]}\n\n'
        b'data: {"choices": [{"delta": {"reasoning": ", yes."}}]}\n\n'
        b'data: {"choices": [{"delta": {"content": "Hi", "reasoning": {"effort": "low"}}}]}\n\n',
        b'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n',
    ]
    items = list(read_chat(sse.batches(chat)))
    assert items == ["Hm, yes.", "Hi"] and [type(i) for i in items] == [Reasoning, str]
    responses = [
        b'data: {"type": "response.reasoning_summary_text.delta", "delta": "Hm."}\n\n'
        b'data: {"type": "response.output_text.delta", "delta": "Hi"}\n\n'
        b'data: {"type": "response.completed", "response": {}}\n\n'
    ]
    items = list(read_responses(sse.batches(responses)))
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


@pytest.mark.parametrize(
    "shape", [{"code": ["x"]}, {"code": {"a": 1}, "type": ["rate_limit_error"]}, {"message": 5}]
)
def test_an_error_of_an_unknown_shape_is_a_502_not_a_bug(shape: dict[str, object]) -> None:
    error = in_band_error(shape)
    assert (error.status, error.reason, error.message) == (
        502,
        "upstream_error_event",
        "The model reported an error.",
    )


def test_a_long_error_code_is_not_passed_on() -> None:
    assert in_band_error({"code": "x" * 65}).message == "The model reported an error."
    assert (
        in_band_error({"code": "server_overloaded"}).message
        == "The model reported an error (server_overloaded)."
    )
