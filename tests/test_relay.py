from __future__ import annotations

import os
import socket
import threading
import time
import types
from collections.abc import Generator

import pytest

from app import hangup
from app.errors import ClientGone, UpstreamError
from app.relay import Relay, utf8
from app.stream import Delta, Reasoning, Usage


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


class Cancellable:
    """A source that records cancel() and close() calls."""

    def __init__(self, *items: Delta) -> None:
        self.items = deltas(*items)
        self.cancelled = threading.Event()
        self.closed = 0

    def __iter__(self) -> Generator[Delta]:
        return self.items

    def close(self) -> None:
        self.closed += 1
        self.items.close()

    def cancel(self) -> None:
        self.cancelled.set()


def test_the_watcher_cancels_the_upstream_when_the_client_hangs_up() -> None:
    server_side, client_side = socket.socketpair()
    source = Cancellable("a")
    relay = Relay(source, started=0.0)
    relay.watch(server_side)
    client_side.close()
    assert source.cancelled.wait(1.0)
    assert relay.client_gone
    relay.close()
    server_side.close()


def test_the_watcher_leaves_a_client_that_sends_more_alone() -> None:
    server_side, client_side = socket.socketpair()
    source = Cancellable("a")
    relay = Relay(source, started=0.0)
    relay.watch(server_side)
    client_side.sendall(b"GET /next HTTP/1.1\r\n")
    assert not source.cancelled.wait(0.3)
    assert not relay.client_gone
    relay.close()
    server_side.close()
    client_side.close()


def test_the_watcher_stops_when_the_reply_is_over(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.hangup.POLL_MS", 50)
    server_side, client_side = socket.socketpair()
    source = Cancellable("a")
    relay = Relay(source, started=0.0)
    watcher = threading.Thread(target=hangup.watch, args=(server_side, relay), daemon=True)
    watcher.start()
    relay.open()
    assert list(relay) == [b"a"]
    relay.close()
    watcher.join(timeout=1.0)
    assert not watcher.is_alive()  # gone within a poll or two of the reply's end
    client_side.close()  # a hang-up now is no longer the watcher's business
    assert not source.cancelled.wait(0.1)
    server_side.close()


def test_a_hang_up_turns_the_upstream_error_into_a_disconnect() -> None:
    relay = Relay(deltas("a", fail=True), started=0.0)
    relay.open()
    relay.client_gone = True
    assert list(relay) == [b"a"]  # no error line for a client that is not there
    assert (relay.outcome, relay.reason) == ("disconnected", None)


def test_the_watcher_works_past_descriptor_1023() -> None:
    # select() refuses descriptors of 1024 and up; a worker with many streams has them.
    server_side, client_side = socket.socketpair()
    high = socket.socket(fileno=os.dup2(server_side.fileno(), 1500))
    source = Cancellable("a")
    relay = Relay(source, started=0.0)
    relay.watch(high)
    assert not source.cancelled.wait(0.3)  # still connected: nothing to do
    client_side.close()
    assert source.cancelled.wait(1.0)
    relay.close()
    high.close()
    server_side.close()


class Unreadable:
    """A client socket whose reads fail in an unforeseen way."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self, size: int, flags: int = 0) -> bytes:
        raise OSError(22, "Invalid argument")


def test_an_unforeseen_error_is_not_taken_for_a_hang_up() -> None:
    server_side, client_side = socket.socketpair()
    source = Cancellable("a")
    relay = Relay(source, started=0.0)
    relay.watch(Unreadable(server_side))  # type: ignore[arg-type]
    client_side.sendall(b"x")  # readable, and then the read fails
    assert not source.cancelled.wait(0.3)
    assert not relay.client_gone
    relay.close()
    server_side.close()
    client_side.close()


@pytest.mark.parametrize("framing", ["text", "sse", "json"])
def test_a_client_that_takes_nothing_is_dropped_like_one_that_left(
    monkeypatch: pytest.MonkeyPatch, framing: str
) -> None:
    monkeypatch.setattr("app.hangup.POLL_MS", 50)
    server_side, client_side = socket.socketpair()
    source = Cancellable("a", "b", "c")
    relay = Relay(source, started=0.0, framing=framing, write_timeout_s=0.3)
    relay.watch(server_side)
    relay.open()
    if framing == "json":
        assert relay.text() == "abc"  # the server is now writing it, and never gets it out
    else:
        next(iter(relay))  # the server is now writing the first chunk, and never gets it out
    assert source.cancelled.wait(2.0)
    assert relay.client_gone
    assert (relay.outcome, relay.reason) == ("disconnected", "client_stalled")
    server_side.settimeout(1.0)
    with pytest.raises(OSError):
        server_side.sendall(b"x" * 1024)  # the waiting write fails at once
    relay.close()
    server_side.close()
    client_side.close()


def test_a_client_that_takes_each_chunk_in_time_is_not_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.hangup.POLL_MS", 50)
    server_side, client_side = socket.socketpair()
    source = Cancellable(*"abcdef")
    relay = Relay(source, started=0.0, write_timeout_s=0.3)
    relay.watch(server_side)
    relay.open()
    chunks = []
    for chunk in relay:
        chunks.append(chunk)
        time.sleep(0.1)  # slow, but each write ends well within the limit
    assert b"".join(chunks) == b"abcdef"
    assert not source.cancelled.is_set()
    assert relay.outcome == "complete"
    relay.close()
    server_side.close()
    client_side.close()


def test_a_client_that_closed_before_the_watcher_started_is_no_crash() -> None:
    server_side, client_side = socket.socketpair()
    server_side.close()
    client_side.close()
    relay = Relay(Cancellable("a"), started=0.0)
    hangup.watch(server_side, relay)  # a closed socket ends it quietly
    assert not relay.client_gone


class Silent:
    """A model that says nothing until it is cancelled, then fails as a hung-up connection does."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.closed = threading.Event()

    def __iter__(self) -> Generator[Delta]:
        self.cancelled.wait(10.0)
        raise UpstreamError("The connection to the model broke.", reason="upstream_broken")
        yield  # a generator

    def close(self) -> None:
        self.closed.set()

    def cancel(self) -> None:
        self.cancelled.set()


@pytest.mark.parametrize("framing", ["text", "sse", "json"])
def test_a_client_leaving_before_the_response_started_is_a_499(framing: str) -> None:
    server_side, client_side = socket.socketpair()
    source = Silent()
    relay = Relay(source, started=0.0, framing=framing)
    relay.watch(server_side)
    threading.Timer(0.2, client_side.close).start()
    started = time.monotonic()
    with pytest.raises(ClientGone) as caught:
        relay.open(5.0)  # the JSON route waits for it all the same way
    assert time.monotonic() - started < 1.0  # when the client left, not when the wait ran out
    assert caught.value.status == 499
    assert (relay.outcome, relay.reason) == ("disconnected", None)
    assert source.closed.wait(1.0)
    server_side.close()


@pytest.mark.parametrize("framing", ["text", "sse"])
def test_the_response_starts_when_the_first_delta_is_late(framing: str) -> None:
    def late() -> Generator[Delta]:
        time.sleep(0.3)
        yield Reasoning("Hmm.")
        yield "a"
        yield Usage(1, 1)

    relay = Relay(
        late(), started=time.perf_counter(), framing=framing, ping_s=0.1, metadata={"request_id": "r"}
    )
    started = time.monotonic()
    relay.open(0.05)
    assert time.monotonic() - started < 0.2
    chunks = list(relay)
    if framing == "text":
        assert chunks == [b"", b"a"]  # the empty chunk sends the headers at once
    else:
        assert chunks[0] == b'data: {"type":"metadata","request_id":"r"}\n\n'
        assert b": ping\n\n" in chunks[1:-3]
        assert chunks[-3:] == [
            b'data: {"type":"reasoning","content":"Hmm."}\n\n',
            b'data: {"type":"token","content":"a"}\n\n',
            b'data: {"type":"done","usage":{"input_tokens":1,"output_tokens":1}}\n\n',
        ]
    assert (relay.outcome, relay.chars, relay.reasoning_chars) == ("complete", 1, 4)
    assert relay.ttft_ms is not None and relay.ttft_ms >= 300  # the answer's first text, not the reasoning


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


@pytest.mark.parametrize(("gap_s", "switches"), [(0.0001, 3), (0.01, 0)], ids=["unpaced", "paced"])
@pytest.mark.parametrize("framing", ["text", "sse", "json"])
def test_a_reply_that_never_waits_lets_the_others_run(
    monkeypatch: pytest.MonkeyPatch, framing: str, gap_s: float, switches: int
) -> None:
    clock = [0.0]
    sleeps: list[float] = []
    fake_time = types.SimpleNamespace(
        perf_counter=lambda: clock[0], monotonic=time.monotonic, sleep=sleeps.append
    )
    monkeypatch.setattr("app.relay.time", fake_time)

    def model() -> Generator[Delta]:
        for _ in range(80):  # 8 ms of unpaced deltas, or 800 ms of paced ones
            clock[0] += gap_s
            yield "x"
        yield Usage(1, 80)

    relay = Relay(model(), started=0.0, framing=framing)
    relay.open()
    if framing == "json":
        assert relay.text() == "x" * 80
    else:
        list(relay)
    # Every 2 ms without a wait (in SSE, the pump and the body each count); never when paced.
    assert (len(sleeps) >= switches if switches else not sleeps) and set(sleeps) <= {0}
