from __future__ import annotations

from collections.abc import Generator

import pytest

from app.errors import UpstreamError
from app.llm import Delta, Usage
from app.relay import Relay, utf8


@pytest.mark.parametrize(
    ("text", "data", "carry"),
    [
        ("plain", b"plain", ""),
        ("é🤖", "é🤖".encode(), ""),
        ("end \ud83e", b"end ", "\ud83e"),
        ("\ud83e\udd16", "🤖".encode(), ""),
        ("a \udc00 b", "a \ufffd b".encode(), ""),
        ("\ud83e", b"", "\ud83e"),
    ],
)
def test_utf8_is_valid_on_its_own(text: str, data: bytes, carry: str) -> None:
    assert utf8(text) == (data, carry)
    data.decode("utf-8")


def deltas(*items: Delta, fail: bool = False) -> Generator[Delta]:
    yield from items
    if fail:
        raise UpstreamError("The connection to the model broke.", reason="upstream_broken")


def test_counts_and_usage_after_a_complete_body() -> None:
    relay = Relay(deltas("ab", "c", Usage(2, 2)), started=0.0)
    relay.open()
    assert b"".join(relay) == b"abc"
    assert (relay.chunks, relay.chars, relay.usage, relay.outcome) == (2, 3, Usage(2, 2), "complete")
    assert relay.ttft_ms is not None


def test_a_dangling_high_surrogate_at_the_end_becomes_a_replacement() -> None:
    relay = Relay(deltas("x\ud83e", None), started=0.0)
    relay.open()
    assert list(relay) == [b"x", "\ufffd".encode()]


def test_an_upstream_failure_ends_the_body_in_band() -> None:
    relay = Relay(deltas("a", fail=True), started=0.0)
    relay.open()
    assert list(relay) == [b"a", b"\n[error: The connection to the model broke.]"]
    assert (relay.outcome, relay.reason) == ("error", "upstream_broken")


def test_an_empty_stream_is_an_empty_reply() -> None:
    relay = Relay(deltas(), started=0.0)
    relay.open()
    assert relay.text() == "" and relay.ttft_ms is None and relay.outcome == "complete"


def test_a_failure_while_opening_marks_the_outcome() -> None:
    relay = Relay(deltas(fail=True), started=0.0)
    with pytest.raises(UpstreamError):
        relay.open()
    assert relay.outcome == "error"
