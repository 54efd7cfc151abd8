"""One client reading a reply: from any point of its log, as plain text, Server-Sent Events, or
(for ``/api/chat``) the whole text at its end.

The reader only reads: the reply goes on whether it stays or leaves. It keeps the figures of
its own request's access line (time to first token, chunks, how it ended) and is watched as a
stream is (``hangup``): a client that leaves, or stops reading, ends this reader only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import ApiError, ClientGone
from ..relay import hangup, sse
from ..upstream.stream import Reasoning, Usage
from .log import End, Event, ReplyLog, joined

if TYPE_CHECKING:
    import socket

OUTCOMES = {"complete": "complete", "stopped": "stopped", "error": "error", "interrupted": "error"}


class Reader:
    """One client's read of a reply's log, and its figures for the access line."""

    def __init__(
        self,
        log: ReplyLog,
        started: float,
        framing: str = "text",
        after: int = 0,
        metadata: dict[str, Any] | None = None,
        ping_s: float = 15.0,
        write_timeout_s: float = 60.0,
        catch_up: bool = True,
        on_leave: Callable[[], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.log = log
        self.started = started
        self.framing = framing  # "text" or "sse" for a stream, "json" for /api/chat
        self.cursor = after  # how many events the client already has
        self.metadata = metadata or {}
        self.ping_s = ping_s
        self.catch_up = catch_up  # send what came before the client joined as joined events
        self.on_leave = on_leave  # the client left before the end (the turn's own, with stop)
        self.on_close = on_close
        self.ttft_ms: float | None = None
        self.chunks = 0
        self.chars = 0
        self.reasoning_chars = 0
        self.usage: Usage | None = None
        self.outcome = "disconnected"  # until the reply's end is sent
        self.reason: str | None = None
        self.status: str | None = None  # the reply's own end, once the client has it
        self.finished = False
        self.client_gone = False
        self.bell = threading.Event()
        self.writes = hangup.Writes(write_timeout_s)
        self.watch: hangup.LoopWatch | None = None
        self._body: Generator[bytes] | None = None
        self._closed = False

    def open(self, wait_s: float | None, client: socket.socket | None) -> None:
        """Watch ``client`` (if given) and wait up to ``wait_s`` for the first event: a reply that
        failed before any text raises its error while a real status can still be sent."""
        if client is not None:
            self.watch = hangup.start(client, self)
        if wait_s:
            self.log.wait(self.cursor, self.bell, wait_s)
        if self.client_gone:
            self.outcome = "disconnected"
            raise ClientGone()
        end = self.log.end
        if end is not None and end.error is not None and len(self.log.events) == self.cursor == 0:
            self._ended(end)
            raise end.error

    def text(self) -> str:
        """The whole reply once it has ended, for ``/api/chat``; a failure raises."""
        while not self.log.wait_end(self.bell):
            if self.client_gone:
                raise ClientGone()
        end = self.log.end
        assert end is not None
        self._ended(end)
        if end.status in ("error", "interrupted"):
            raise end.error or ApiError(end.message or "The reply failed.", 502)
        text = self.log.text()
        self.chunks = sum(1 for event in self.log.events if type(event) is str)
        self.chars = len(text)
        self.writes.handed_at = time.monotonic()  # the server writes it once the view returns
        return text

    def __iter__(self) -> Iterator[bytes]:
        body = self._events() if self.framing == "sse" else self._text()
        self._body = self.writes.timed(body)
        return self._body

    def _text(self) -> Generator[bytes]:
        """The reply's text from the cursor on: a chunk per event; a failure as a last line."""
        log = self.log
        try:
            if len(log.events) == self.cursor and log.end is None:
                yield b""  # no text yet: the server sends the headers now all the same
            while True:
                count = len(log.events)
                if count > self.cursor:
                    text = "".join(self._count(log.events[self.cursor : count]))
                    self.cursor = count
                    if text:
                        yield text.encode()
                    continue
                end = log.end
                if end is not None:
                    self._ended(end)
                    if end.message and end.status in ("error", "interrupted"):
                        yield f"\n[error: {end.message}]".encode()
                    return
                if self.client_gone:
                    return
                log.wait(self.cursor, self.bell, None)
        finally:
            self.finished = True

    def _events(self) -> Generator[bytes]:
        """Server-Sent Events: metadata, then each event with its id, pings in silences, the end."""
        log = self.log
        try:
            yield sse.frame({"type": "metadata", **self.metadata})
            count = len(log.events)
            if self.catch_up and count > self.cursor:
                # What came before the client joined, a run of one kind as one event.
                runs = joined(log.events[self.cursor : count])
                frames = [self._frame(text, self.cursor + index + 1) for text, index in runs]
                self._count(log.events[self.cursor : count])
                self.cursor = count
                yield b"".join(frames)
            while True:
                count = len(log.events)
                if count > self.cursor:
                    events = log.events[self.cursor : count]
                    self._count(events)
                    frames = [self._frame(event, self.cursor + n) for n, event in enumerate(events, 1)]
                    self.cursor = count
                    yield frames[0] if len(frames) == 1 else b"".join(frames)
                    continue
                end = log.end
                if end is not None:
                    self._ended(end)
                    yield sse.numbered(end_event(end), count + 1)
                    return
                if self.client_gone:
                    return
                quiet_since = time.monotonic()
                woken = log.wait(self.cursor, self.bell, self.ping_s)
                # A ping after a silence only: a wake-up with nothing new for this reader is none.
                if not woken and not self.client_gone and time.monotonic() - quiet_since >= self.ping_s:
                    yield sse.PING
        finally:
            self.finished = True

    def _frame(self, event: Event, number: int) -> bytes:
        kind = "reasoning" if type(event) is Reasoning else "token"
        return sse.numbered({"type": kind, "content": str(event)}, number)

    def _count(self, events: list[Event]) -> list[str]:
        """Count the events for the access line; their answer text."""
        texts = [event for event in events if type(event) is str]
        if texts and self.ttft_ms is None:
            self.ttft_ms = (time.perf_counter() - self.started) * 1000.0
        self.chunks += len(texts)
        self.chars += sum(map(len, texts))
        if len(texts) < len(events):
            self.reasoning_chars += sum(len(event) for event in events if type(event) is Reasoning)
        return texts

    def _ended(self, end: End) -> None:
        self.usage = end.usage
        self.status = end.status
        if not self.client_gone:
            self.outcome = OUTCOMES[end.status]
            self.reason = end.reason if end.status != "complete" else None
            if end.status == "interrupted":
                self.reason = "interrupted"

    def over(self) -> bool:
        """Is the reader done and its last chunk written (as far as the server tells)?"""
        return self.finished and self.writes.handed_at is None

    def hung_up(self, reason: str | None) -> None:
        """The watcher saw the client leave: stop reading (the reply goes on)."""
        if self.over():
            return
        if reason:
            self.reason = reason
        self.client_gone = True
        self.outcome = "disconnected"
        self.bell.set()
        self._left()

    def close(self) -> None:
        """Called by the server when the response is over, read to its end or not."""
        if self._closed:
            return
        self._closed = True
        self.writes.handed_at = None
        self.finished = True
        if self.watch is not None:
            self.watch.stop()
        if self._body is not None:
            self._body.close()
        if self.status is None:
            self._left()
        if self.on_close is not None:
            self.on_close()

    def _left(self) -> None:
        on_leave, self.on_leave = self.on_leave, None
        if on_leave is not None:
            on_leave()


def end_event(end: End) -> dict[str, Any]:
    """The last event a reader gets: ``done`` with how the reply ended, or ``error``."""
    if end.status in ("error", "interrupted"):
        return {"type": "error", "message": end.message or "The reply failed.", "status": end.status}
    usage = end.usage.as_dict() if end.usage else None
    return {"type": "done", "usage": usage, "status": end.status}
