"""The client watcher, on socket pairs: each test shows the watcher ran and how it ended."""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from collections.abc import Generator, Iterator

import gevent
import gevent.socket
import pytest

from app.errors import ClientGone, UpstreamError
from app.relay import hangup
from app.relay.relay import Relay
from app.upstream.stream import Delta

from ..support import wait_until


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.relay.relay.hangup.POLL_MS", 50)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """The server's end of a client connection, and the client's."""
    server_side, client_side = socket.socketpair()
    yield server_side, client_side
    server_side.close()
    client_side.close()


class Cancellable:
    """A source that records cancel() and close() calls."""

    def __init__(self, *items: Delta) -> None:
        self.items: Generator[Delta] = (item for item in items)
        self.cancelled = threading.Event()
        self.closed = 0

    def __iter__(self) -> Generator[Delta]:
        return self.items

    def close(self) -> None:
        self.closed += 1
        self.items.close()

    def cancel(self) -> None:
        self.cancelled.set()


class Watcher(threading.Thread):
    """``hangup.watch`` in a thread of its own, as ``hangup.start`` runs it; ``ended`` is what it returned."""

    def __init__(self, client: socket.socket, relay: Relay) -> None:
        super().__init__(daemon=True)
        self.client, self.relay = client, relay
        self.ended: str | None = None
        self.start()

    def run(self) -> None:
        self.ended = hangup.watch(self.client, self.relay)

    def result(self) -> str | None:
        self.join(timeout=2.0)
        assert not self.is_alive()
        return self.ended


class LookedAt(hangup.Writes):
    """The server's writes, counting how often the watcher looks for a stall."""

    looks = 0

    def stalled(self) -> bool:
        self.looks += 1
        return super().stalled()


class Peeked:
    """A client socket that notes each read the watcher makes."""

    def __init__(self, sock: socket.socket, fail: bool = False) -> None:
        self.sock = sock
        self.fail = fail
        self.read = threading.Event()

    def fileno(self) -> int:
        return self.sock.fileno()

    def gettimeout(self) -> float | None:
        return self.sock.gettimeout()

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def recv(self, size: int, flags: int = 0) -> bytes:
        assert flags & socket.MSG_PEEK  # the watcher never takes what the server must read
        assert flags & socket.MSG_DONTWAIT  # nor waits on the client's socket
        self.read.set()
        if self.fail:
            raise OSError(22, "Invalid argument")
        return self.sock.recv(size, flags)


def test_a_hang_up_cancels_the_upstream(pair: tuple[socket.socket, socket.socket]) -> None:
    server_side, client_side = pair
    source = Cancellable("a")
    relay = Relay(source, started=0.0)
    watcher = Watcher(server_side, relay)
    client_side.close()
    assert source.cancelled.wait(1.0)
    assert watcher.result() == "gone"
    assert relay.client_gone and relay.outcome == "disconnected"
    relay.close()


def test_a_client_that_sends_more_is_left_alone(pair: tuple[socket.socket, socket.socket]) -> None:
    server_side, client_side = pair
    source = Cancellable("a")
    relay = Relay(source, started=0.0)
    client = Peeked(server_side)
    watcher = Watcher(client, relay)  # type: ignore[arg-type]
    client_side.sendall(b"GET /next HTTP/1.1\r\n")
    assert client.read.wait(1.0)  # it saw the bytes and peeked at them
    relay.open()
    assert list(relay) == [b"a"]
    relay.close()
    assert watcher.result() == "over"  # watched on until the reply was over, then let go
    assert not source.cancelled.is_set() and not relay.client_gone
    assert server_side.recv(64) == b"GET /next HTTP/1.1\r\n"  # still there for the server


def test_the_watcher_lets_go_when_the_reply_is_over(pair: tuple[socket.socket, socket.socket]) -> None:
    server_side, client_side = pair
    source = Cancellable("a")
    relay = Relay(source, started=0.0)
    watcher = Watcher(server_side, relay)
    relay.open()
    assert list(relay) == [b"a"]
    assert watcher.is_alive()  # watching while the server writes
    relay.close()
    assert watcher.result() == "over"  # within a poll or two of the reply's end
    client_side.close()  # a hang-up now is no longer the watcher's business
    assert not source.cancelled.is_set()


def test_the_next_request_on_a_kept_alive_connection_is_not_peeked_at(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server_side, client_side = pair
    relay = Relay(Cancellable("a"), started=0.0)
    client = Peeked(server_side)
    watcher = Watcher(client, relay)  # type: ignore[arg-type]
    relay.open()
    assert list(relay) == [b"a"]
    assert watcher.is_alive()
    relay.close()
    client_side.sendall(b"GET /next HTTP/1.1\r\n")  # readable, but the reply is over
    assert watcher.result() == "over"
    assert not client.read.is_set()  # the server reads it, not the watcher


def test_the_watcher_works_past_descriptor_1023(pair: tuple[socket.socket, socket.socket]) -> None:
    # select() refuses descriptors of 1024 and up; a worker with many streams has them.
    server_side, client_side = pair
    high = socket.socket(fileno=os.dup2(server_side.fileno(), 1500))
    source = Cancellable("a")
    relay = Relay(source, started=0.0)
    watcher = Watcher(high, relay)
    client_side.close()
    assert source.cancelled.wait(1.0)
    assert watcher.result() == "gone"
    relay.close()
    high.close()


def test_an_unforeseen_error_is_not_taken_for_a_hang_up(pair: tuple[socket.socket, socket.socket]) -> None:
    server_side, client_side = pair
    source = Cancellable("a")
    relay = Relay(source, started=0.0)
    client = Peeked(server_side, fail=True)
    watcher = Watcher(client, relay)  # type: ignore[arg-type]
    client_side.sendall(b"x")  # readable, and then the read fails
    assert watcher.result() == "unreadable"
    assert client.read.is_set()
    assert not source.cancelled.is_set() and not relay.client_gone
    relay.close()


@pytest.mark.parametrize("framing", ["text", "sse", "json"])
def test_a_client_that_takes_nothing_is_dropped_like_one_that_left(
    pair: tuple[socket.socket, socket.socket], framing: str
) -> None:
    server_side, _ = pair
    source = Cancellable("a", "b", "c")
    relay = Relay(source, started=0.0, framing=framing, write_timeout_s=0.3)
    watcher = Watcher(server_side, relay)
    start_writing(relay, "abc")
    assert source.cancelled.wait(2.0)
    assert watcher.result() == "client_stalled"
    assert_dropped(relay, server_side)


def start_writing(relay: Relay, whole: str) -> None:
    """Open ``relay`` and hand the server its first chunk (JSON: the whole reply), which the
    client never takes."""
    relay.open()
    if relay.framing == "json":
        assert relay.text() == whole
    else:
        next(iter(relay))


def assert_dropped(relay: Relay, server_side: socket.socket) -> None:
    """The relay ended as a stalled client's, and the server's waiting write fails at once."""
    assert relay.client_gone
    assert (relay.outcome, relay.reason) == ("disconnected", "client_stalled")
    server_side.settimeout(1.0)
    with pytest.raises(OSError):
        server_side.sendall(b"x" * 1024)
    relay.close()


def test_a_client_that_takes_each_chunk_in_time_is_not_dropped(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server_side, _ = pair
    source = Cancellable(*"abcdef")
    relay = Relay(source, started=0.0, write_timeout_s=0.3)
    watcher = Watcher(server_side, relay)
    relay.open()
    chunks = []
    for chunk in relay:
        chunks.append(chunk)
        time.sleep(0.1)  # a slow client, but each write ends well within the limit
    assert watcher.is_alive()
    relay.close()
    assert b"".join(chunks) == b"abcdef"
    assert watcher.result() == "over"  # it watched the whole reply, and let go at its end
    assert not source.cancelled.is_set()
    assert relay.outcome == "complete"


def test_a_client_that_closed_before_the_watcher_started_is_no_crash() -> None:
    server_side, client_side = socket.socketpair()
    server_side.close()
    client_side.close()
    relay = Relay(Cancellable("a"), started=0.0)
    assert hangup.watch(server_side, relay) == "unreadable"  # a closed socket ends it quietly
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
def test_a_client_leaving_before_the_response_started_is_a_499(
    pair: tuple[socket.socket, socket.socket], framing: str
) -> None:
    server_side, client_side = pair
    source = Silent()
    relay = Relay(source, started=0.0, framing=framing)
    threading.Timer(0.2, client_side.close).start()
    started = time.monotonic()
    with pytest.raises(ClientGone) as caught:
        relay.open(5.0, server_side)  # watched from the start; the JSON route waits the same way
    assert time.monotonic() - started < 1.0  # when the client left, not when the wait ran out
    assert caught.value.status == 499
    assert (relay.outcome, relay.reason) == ("disconnected", None)
    relay.close()  # as the server does once the 499 went out (or could not)
    assert source.closed.wait(1.0)


# The event loop's watcher (gevent's worker): driven here by running gevent's loop in the test.


def loop_watched(
    server_side: socket.socket, fail: bool = False
) -> tuple[Cancellable, Relay, Peeked, hangup.LoopWatch]:
    """A one-delta reply, watched from the loop on a client socket that notes each read."""
    source = Cancellable("a")
    relay = Relay(source, started=0.0)
    client = Peeked(server_side, fail)
    relay.watch = hangup.LoopWatch(client, relay)  # type: ignore[arg-type]
    return source, relay, client, relay.watch


def test_the_loop_watch_hangs_up_when_the_client_does(pair: tuple[socket.socket, socket.socket]) -> None:
    server_side, client_side = pair
    source = Cancellable("a")
    relay = Relay(source, started=0.0)
    watch = hangup.LoopWatch(server_side, relay)
    client_side.close()
    assert wait_until(source.cancelled.is_set, timeout=2.0, sleep=gevent.sleep)
    assert watch.ended == "gone"
    assert relay.client_gone and relay.outcome == "disconnected"
    relay.close()


def test_the_loop_watch_leaves_a_pipelined_request_for_the_server(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server_side, client_side = pair
    source, relay, client, watch = loop_watched(server_side)
    client_side.sendall(b"GET /next HTTP/1.1\r\n")
    # It saw the bytes and peeked at them.
    assert wait_until(client.read.is_set, timeout=2.0, sleep=gevent.sleep)
    # After a pipelined request a hang-up no longer shows: the socket is no longer watched,
    # only the stall clock ticks on.
    assert not watch._readable.active and watch._tick.active
    client_side.shutdown(socket.SHUT_WR)
    gevent.idle()
    assert not source.cancelled.is_set() and watch.ended is None
    relay.open()
    assert list(relay) == [b"a"]
    relay.close()
    assert watch.ended == "over"
    assert server_side.recv(64) == b"GET /next HTTP/1.1\r\n"  # still there for the server


def test_the_loop_watch_stops_when_the_reply_closes(pair: tuple[socket.socket, socket.socket]) -> None:
    server_side, client_side = pair
    source, relay, client, watch = loop_watched(server_side)
    relay.writes = writes = LookedAt(relay.writes.timeout_s)
    relay.open()
    body = iter(relay)
    assert next(body) == b"a"
    # It ticks while the server writes.
    assert wait_until(lambda: writes.looks >= 2, timeout=2.0, sleep=gevent.sleep)
    assert watch.ended is None
    assert list(body) == []
    relay.close()
    assert watch.ended == "over"
    assert not watch._readable.active and not watch._tick.active  # nothing of it is left on the loop
    looks = writes.looks
    client_side.sendall(b"GET /next HTTP/1.1\r\n")  # the next request is the server's
    client_side.close()
    gevent.idle()
    assert not client.read.is_set() and not source.cancelled.is_set() and writes.looks == looks


def test_the_loop_watch_lets_go_of_a_reply_that_ended_without_a_close(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server_side, _ = pair
    relay = Relay(Cancellable("a"), started=0.0)
    watch = hangup.LoopWatch(server_side, relay)
    relay.open()
    assert list(relay) == [b"a"]  # over, as far as the server tells, but not closed
    assert wait_until(lambda: watch.ended, timeout=2.0, sleep=gevent.sleep)  # at the next tick
    assert watch.ended == "over"


@pytest.mark.parametrize("framing", ["text", "sse", "json"])
def test_the_loop_watch_drops_a_client_that_takes_nothing(
    pair: tuple[socket.socket, socket.socket], framing: str
) -> None:
    server_side, _ = pair
    source = Cancellable("a", "b")
    relay = Relay(source, started=0.0, framing=framing, write_timeout_s=0.3)
    watch = hangup.LoopWatch(server_side, relay)
    start_writing(relay, "ab")
    assert wait_until(source.cancelled.is_set, timeout=2.0, sleep=gevent.sleep)
    assert watch.ended == "client_stalled"
    assert_dropped(relay, server_side)


def test_the_loop_watch_drops_a_stalled_client_as_a_departed_one_on_geventsockets() -> None:
    # gevent's sockets, as the worker has: the server's waiting write must fail as a write to a
    # departed client does (EPIPE), which gunicorn passes over; EBADF, it logs with a traceback.
    server_side, client_side = gevent.socket.socketpair()
    try:
        source = Cancellable("a", "b")
        relay = Relay(source, started=0.0, write_timeout_s=0.3)
        watch = hangup.LoopWatch(server_side, relay)
        start_writing(relay, "ab")
        writing = gevent.spawn(server_side.sendall, b"x" * (1 << 24))  # more than buffers hold: it waits
        writing.join(timeout=3.0)
        assert watch.ended == "client_stalled" and source.cancelled.is_set()
        assert isinstance(writing.exception, OSError)
        assert writing.exception.errno in (errno.EPIPE, errno.ECONNRESET)
        relay.close()
    finally:
        server_side.close()
        client_side.close()


def test_the_loop_watch_leaves_a_client_whose_write_went_out_before_the_drop(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    server_side, client_side = pair
    monkeypatch.setattr("app.relay.relay.hangup.POLL_MS", 60_000)  # no tick but the one below
    source = Cancellable("a", "b")
    relay = Relay(source, started=0.0, write_timeout_s=0.3)
    relay.writes = writes = LookedAt(relay.writes.timeout_s)
    relay.watch = watch = hangup.LoopWatch(server_side, relay)
    start_writing(relay, "ab")
    relay.writes.handed_at = time.monotonic() - 1.0  # stalled at the tick...
    monkeypatch.setattr("app.loop.evented", lambda: True)  # the drop is a greenlet, as under the worker
    watch._on_tick()
    relay.writes.handed_at = None  # ...and written before the drop ran
    gevent.idle()
    assert writes.looks == 2  # the tick's look, and the drop's own
    assert watch.ended is None and not source.cancelled.is_set() and not relay.client_gone
    server_side.sendall(b"still open")
    assert client_side.recv(64) == b"still open"
    relay.close()
    assert watch.ended == "over" and relay.reason is None


def test_the_loop_watch_does_not_peek_once_the_reply_is_over(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server_side, client_side = pair
    source, relay, client, watch = loop_watched(server_side)
    relay.open()
    assert list(relay) == [b"a"]  # over, as far as the server tells
    client_side.sendall(b"GET /next HTTP/1.1\r\n")  # the next request: the server's to read
    assert wait_until(lambda: watch.ended, timeout=2.0, sleep=gevent.sleep)
    assert watch.ended == "over" and not client.read.is_set() and not source.cancelled.is_set()
    watch._peek()  # a peek spawned just before the reply ended looks no further
    assert not client.read.is_set()
    relay.close()


def test_the_loop_watch_takes_an_unreadable_socket_for_no_hang_up(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server_side, client_side = pair
    source, relay, client, watch = loop_watched(server_side, fail=True)
    client_side.sendall(b"x")  # readable, and then the read fails
    assert wait_until(lambda: watch.ended, timeout=2.0, sleep=gevent.sleep)
    assert watch.ended == "unreadable" and client.read.is_set()
    assert not source.cancelled.is_set() and not relay.client_gone
    relay.close()


def test_start_watches_from_the_loop_under_gevent_and_in_a_thread_elsewhere(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    server_side, client_side = pair
    monkeypatch.setattr(hangup, "evented", lambda: True)
    relay = Relay(Cancellable("a"), started=0.0)
    relay.open(client=server_side)
    assert isinstance(relay.watch, hangup.LoopWatch)
    relay.close()
    assert relay.watch.ended == "over"  # stopped with the reply
    monkeypatch.setattr(hangup, "evented", lambda: False)
    source = Cancellable("a")
    threaded = Relay(source, started=0.0)
    threaded.open(client=server_side)
    assert threaded.watch is None
    client_side.close()
    assert source.cancelled.wait(1.0)  # the thread saw the hang-up
    threaded.close()
