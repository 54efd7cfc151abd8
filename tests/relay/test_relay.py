from __future__ import annotations

import json
import threading
import time
import types
from collections.abc import Generator

import pytest

from app.errors import UpstreamError
from app.relay.relay import Relay
from app.upstream.stream import SLICE_S, YIELD_S, Delta, Reasoning, Usage


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


def test_a_hang_up_turns_the_upstream_error_into_a_disconnect() -> None:
    relay = Relay(deltas("a", fail=True), started=0.0)
    relay.open()
    relay.client_gone = True
    assert list(relay) == [b"a"]  # no error line for a client that is not there
    assert (relay.outcome, relay.reason) == ("disconnected", None)


def test_a_reply_that_went_out_whole_keeps_its_outcome_when_the_client_leaves_after() -> None:
    relay = Relay(deltas("a", None), started=0.0)
    relay.open()
    assert list(relay) == [b"a"]  # written whole, as far as the server tells
    relay.hung_up("client_stalled")  # a watcher that looked just too late
    assert (relay.outcome, relay.reason, relay.client_gone) == ("complete", None, False)


@pytest.mark.parametrize("framing", ["text", "sse"])
def test_the_response_starts_when_the_first_delta_is_late(framing: str) -> None:
    speak = threading.Event()  # the model is silent until the test says
    spoke_at: list[float] = []

    def late() -> Generator[Delta]:
        assert speak.wait(5.0)
        spoke_at.append(time.perf_counter())
        yield Reasoning("Hmm.")
        yield "a"
        yield Usage(1, 1)

    relay = Relay(
        late(), started=time.perf_counter(), framing=framing, ping_s=0.01, metadata={"request_id": "r"}
    )
    relay.open(0.01)  # returns while the model is silent: the response starts
    body = iter(relay)
    chunks = [next(body)]
    if framing == "sse":
        assert chunks == [b'data: {"type":"metadata","request_id":"r"}\n\n']
        chunks += [next(body), next(body)]
        assert chunks[1:] == [b": ping\n\n"] * 2  # a ping per silence of ping_s, while silent
    speak.set()
    chunks += list(body)
    if framing == "text":
        assert chunks == [b"", b"a"]  # the empty chunk sends the headers at once
    else:
        assert set(chunks[3:-3]) <= {b": ping\n\n"}  # perhaps more, until the model's first delta came
        assert chunks[-3:] == [
            b'data: {"type":"reasoning","content":"Hmm."}\n\n',
            b'data: {"type":"token","content":"a"}\n\n',
            b'data: {"type":"done","usage":{"input_tokens":1,"output_tokens":1},"status":"complete"}\n\n',
        ]
    assert (relay.outcome, relay.chars, relay.reasoning_chars) == ("complete", 1, 4)
    assert relay.ttft_ms is not None  # the answer's first text, not the reasoning
    assert relay.ttft_ms >= (spoke_at[0] - relay.started) * 1000.0


def test_reasoning_is_left_out_of_the_text_and_does_not_count_as_the_first_token() -> None:
    def thinking() -> Generator[Delta]:
        yield Reasoning("Let me see. ")
        time.sleep(0.1)
        yield Reasoning("Yes.")
        yield "Answer"
        yield Usage(1, 1)

    relay = Relay(thinking(), started=time.perf_counter(), framing="json")
    relay.open()
    assert relay.text() == "Answer"
    assert (relay.chunks, relay.chars, relay.reasoning_chars) == (1, 6, 16)
    assert relay.ttft_ms is not None and relay.ttft_ms >= 100


@pytest.mark.parametrize("framing", ["text", "sse"])
def test_a_reply_closed_before_its_late_first_delta_still_closes_the_source(framing: str) -> None:
    speak = threading.Event()
    closed = threading.Event()

    class Late:
        def __iter__(self) -> Generator[Delta]:
            speak.wait(5.0)  # a model that ignores the hang-up and answers anyway
            yield "a"
            yield Usage(1, 1)

        def close(self) -> None:
            closed.set()

    relay = Relay(Late(), started=0.0, framing=framing, metadata={"request_id": "r"})
    relay.open(0.05)
    body = iter(relay)
    next(body)  # the headers (plain) or the metadata (SSE) went out
    relay.close()  # the client left
    assert not closed.is_set()  # the opener is still reading: it must close the source itself
    speak.set()
    assert closed.wait(1.0)


def fake_clock(monkeypatch: pytest.MonkeyPatch, clock: list[float]) -> list[float]:
    """The relaying loops' clock reads ``clock[0]``; what they sleep is recorded, not slept."""
    sleeps: list[float] = []
    fake_time = types.SimpleNamespace(
        perf_counter=lambda: clock[0], monotonic=time.monotonic, sleep=sleeps.append
    )
    monkeypatch.setattr("app.upstream.stream.time", fake_time)
    return sleeps


def read_all(relay: Relay, text: str) -> None:
    """Open the reply and read it to its end as its route does."""
    relay.open()
    if relay.framing == "json":
        assert relay.text() == text
    elif relay.framing == "sse":
        events = [json.loads(line[6:]) for line in b"".join(relay).split(b"\n\n") if line]
        assert "".join(e["content"] for e in events if e["type"] == "token") == text
    else:
        assert b"".join(relay) == text.encode()


@pytest.mark.parametrize(("gap_s", "yields"), [(0.0001, True), (0.01, False)], ids=["unpaced", "paced"])
@pytest.mark.parametrize("framing", ["text", "sse", "json"])
def test_a_reply_that_never_waits_lets_the_others_run(
    monkeypatch: pytest.MonkeyPatch, framing: str, gap_s: float, yields: bool
) -> None:
    clock = [0.0]
    sleeps = fake_clock(monkeypatch, clock)

    def model() -> Generator[Delta]:
        for _ in range(80):  # 8 ms of unpaced deltas, or 800 ms of paced ones
            clock[0] += gap_s
            yield "x"
        yield Usage(1, 80)

    read_all(Relay(model(), started=0.0, framing=framing), "x" * 80)
    # Every SLICE_S without a wait (in SSE, the pump and the body each count); never when paced.
    if yields:
        assert len(sleeps) >= 80 * gap_s / SLICE_S / 2  # a turn at least every other slice
    else:
        assert not sleeps
    assert set(sleeps) <= {YIELD_S}


# The JSON route reads its first delta before any slice starts: only the pump's reads are timed.
@pytest.mark.parametrize("framing", ["text", "sse"])
def test_the_first_delta_costs_no_turn_however_long_the_request_took(
    monkeypatch: pytest.MonkeyPatch, framing: str
) -> None:
    clock = [100.0]
    sleeps = fake_clock(monkeypatch, clock)

    def model() -> Generator[Delta]:
        clock[0] += SLICE_S * 2.5  # the request sent and answered: longer than a slice, not a wait
        yield "x"
        yield Usage(1, 1)

    read_all(Relay(model(), started=0.0, framing=framing), "x")
    assert sleeps == []
