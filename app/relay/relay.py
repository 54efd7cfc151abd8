"""One reply in flight: model deltas counted, how it ended settled once, the upstream closed on
every exit. The stream route's bodies (plain text, SSE) are in ``framing``.

Plain Python: the view hands in plain values, and the WSGI server drives the body and
calls ``close()`` when the last byte went out or the client left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import ClientGone, UpstreamError
from ..upstream.stream import Delta, Reasoning, Source, TimeSlice, Usage, repaired
from . import framing, hangup
from .pump import PING, SILENT, Pump

if TYPE_CHECKING:
    import socket

log = logging.getLogger(__name__)

INTERNAL_ERROR = "The server hit an unexpected error."


class Relay:
    """One reply in flight: pulls deltas, hands out text, and keeps the figures for the log."""

    def __init__(
        self,
        source: Source,
        started: float,
        framing: str = "text",
        ping_s: float = 15.0,
        metadata: dict[str, Any] | None = None,
        write_timeout_s: float = 60.0,
    ) -> None:
        self.source = source
        self.framing = framing  # "text" or "sse" for the stream route, "json" for /api/chat
        self.ping_s = ping_s
        self.deltas: Iterator[Delta] = iter(source)
        self.started = started
        self.ttft_ms: float | None = None
        self.chunks = 0
        self.chars = 0
        self.reasoning_chars = 0
        self.usage: Usage | None = None
        self.outcome = "disconnected"  # until the body runs to its end
        self.reason: str | None = None
        self.finished = False
        self.client_gone = False
        self.metadata = metadata or {}  # SSE: the first event's fields (request id, model, ids)
        self.first: Delta = None
        self._body: Generator[bytes] | None = None
        self.pump: Pump | None = None  # SSE, and plain text's first delta: read in a greenlet of its own
        self.writes = hangup.Writes(write_timeout_s)
        self.watch: hangup.LoopWatch | None = None
        self._closed = False
        self._source_closed = False

    def open(self, wait_s: float | None = None, client: socket.socket | None = None) -> None:
        """Wait for the first delta, so a failure before it raises while a status can still be sent;
        from the start, watch ``client`` (if given) to hang up on the model when it leaves.

        The stream framings wait at most ``wait_s``: a model still silent then gets the
        response started anyway, and its first delta is read on in a greenlet of its own.
        """
        if self.framing == "json":
            if client is not None:
                self.watch = hangup.start(client, self)
            try:
                self.first = next(self.deltas)
            except StopIteration:
                self.first = None
            except BaseException as error:
                raise self._opening_failed(error) from None  # close() closes the model's stream
            return
        self.pump = Pump(self, keep_reading=self.framing == "sse")
        if client is not None:
            # After the pump: it sends the model its request first, and the watcher starts
            # while the model is answering (measured: 40 us less time to the first byte).
            self.watch = hangup.start(client, self)
        item = self.pump.first(wait_s)  # SILENT: the response starts all the same
        if isinstance(item, BaseException):
            raise self._opening_failed(item) from None
        self.first = item
        if type(item) is str:
            self.ttft_ms = (time.perf_counter() - self.started) * 1000.0

    def _opening_failed(self, error: BaseException) -> BaseException:
        """Record a failure before the response started; what to raise (a departed client: 499)."""
        self.end("error", getattr(error, "reason", "internal"))
        return ClientGone() if self.client_gone else error

    def text(self) -> str:
        """The whole reply, for the JSON route; an upstream failure raises."""
        try:
            reply = "".join(self.texts())
        except BaseException as error:
            raise self._opening_failed(error) from None
        self.end("complete")
        self.writes.handed_at = time.monotonic()  # the server writes it once the view returns
        return repaired(reply)

    def __iter__(self) -> Iterator[bytes]:
        body = framing.stream_events(self) if self.framing == "sse" else framing.stream_text(self)
        self._body = self.writes.timed(body)
        return self._body

    def close(self) -> None:
        """Close the body and the upstream: called by the server on completion or disconnect
        (for the JSON route, when the response closes)."""
        if self._closed:
            return
        self._closed = True
        self.writes.handed_at = None
        self.finished = True
        if self.watch is not None:
            self.watch.stop()  # the server closes the client's socket next
        if self._body is not None:
            self._body.close()
        if self.reads_source_here():
            self.close_source()
        elif self.outcome != "complete":
            # Unblock the pump (unless the reply is complete: then it may be draining the
            # body's end, to keep the connection for reuse); it closes the source as it stops.
            self._cancel()

    def end(self, outcome: str, reason: str | None = None) -> None:
        self.finished = True
        if not self.client_gone:  # else how the reply ended was settled when the client left
            self.outcome, self.reason = outcome, reason

    def over(self) -> bool:
        """Is the reply ended and written (as far as the server tells)?"""
        return self.finished and self.writes.handed_at is None

    def hung_up(self, reason: str | None) -> None:
        """The watcher saw the client leave: end the upstream, and wake whoever waits on it."""
        if self.over():
            return  # the reply went out whole just before the client left
        if reason:
            self.reason = reason
        self.client_gone = True
        self.outcome = "disconnected"
        self._cancel()
        if self.pump is not None:  # wake a wait for the opener or the pump at once
            self.pump.wake(ClientGone())

    def close_source(self) -> None:
        """Close the model's stream, once, from the greenlet that reads it: the one way it is closed.

        A generator cannot be closed from another greenlet while it runs (close() only cancels
        it then), so whoever reads the stream closes it when it stops reading: the pump, while it
        reads; else ``texts()`` at its end (the JSON route, and the plain body after its first
        delta); else ``close()``, which the server calls when the last byte went out or the
        client left, and which also ends a stream that failed before the response started.
        """
        if not self._source_closed:
            self._source_closed = True
            self.source.close()

    def reads_source_here(self) -> bool:
        """Does the request's greenlet read the source (no pump reads it)?"""
        return self.pump is None or not self.pump.reading

    def _cancel(self) -> None:
        cancel = getattr(self.source, "cancel", None)
        if cancel is not None:
            cancel()

    def texts(self) -> Iterator[str]:
        """The answer's text deltas, counted; reasoning is counted and left out. Read in the
        request's greenlet, which closes the model's stream at their end (unless the pump reads it)."""
        first: Delta | BaseException = self.first
        if first is SILENT:
            assert self.pump is not None
            first = self.pump.next()  # the opener stopped waiting for it: wait on here
        try:
            for item in self.counted(first, self._next):
                if type(item) is str:
                    yield item
        finally:
            if self.reads_source_here():
                self.close_source()  # read to its end here: released before the last write

    def _next(self) -> Delta:
        return next(self.deltas)

    def counted(
        self, item: Delta | BaseException, pull: Callable[[], Delta | BaseException]
    ) -> Iterator[Delta]:
        """The reply's items from ``item`` on, ``pull()`` giving each next one, counted as they
        pass: text and reasoning deltas, and pings (SSE). A failure raises; the usage, the last
        item, is kept, and ends them. Both framings and the JSON route read the reply through here."""
        fair = TimeSlice()
        while True:
            fair.tick()
            if type(item) is str:
                self.count(item)
            elif type(item) is Reasoning:
                self.count_reasoning(item)
            elif isinstance(item, BaseException):
                raise item
            elif item is not PING:
                self.take_usage(item)
                return  # the usage (or None) is the last item: the reply is over
            yield item
            try:
                item = pull()
            except StopIteration:
                return

    def failed(self, error: Exception) -> str | None:
        """Record a failure after the start; the sentence to send, or None when nobody listens."""
        if self.client_gone:  # whatever broke, it broke because the client left
            self.end("disconnected")
            return None
        if isinstance(error, UpstreamError):
            self.end("error", error.reason)
            return error.message
        # A bug: said in-band, and logged once with its traceback.
        log.error("unhandled %s while streaming a reply", type(error).__name__, exc_info=error)
        self.end("error", "internal")
        return INTERNAL_ERROR

    def count_reasoning(self, text: Reasoning) -> None:
        self.reasoning_chars += len(text)

    def take_usage(self, last: Delta) -> Usage | None:
        """Keep the reply's last item as its usage (None when the model reported none)."""
        self.usage = last if isinstance(last, Usage) else None
        return self.usage

    def count(self, text: str) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = (time.perf_counter() - self.started) * 1000.0
        self.chunks += 1
        self.chars += len(text)
