"""The stream route's two framings of a reply: plain UTF-8 text, or Server-Sent Events.

Each is a generator the WSGI server drives; the relay keeps the reply's figures and ends it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Iterator
from typing import Any, Protocol

from ..upstream.stream import REPLACEMENT, Delta, Reasoning, Usage, utf8
from . import sse
from .pump import SILENT, Pump


class Relay(Protocol):
    """What a framing needs of the reply it writes (the relay, which picks the framing)."""

    first: Delta
    pump: Pump | None
    metadata: dict[str, Any]
    ping_s: float
    finished: bool
    usage: Usage | None

    def texts(self) -> Iterator[str]: ...
    def counted(
        self, item: Delta | BaseException, pull: Callable[[], Delta | BaseException]
    ) -> Iterator[Delta]: ...
    def end(self, outcome: str, reason: str | None = None) -> None: ...
    def failed(self, error: Exception) -> str | None: ...


def stream_text(relay: Relay) -> Generator[bytes]:
    """The reply's text as UTF-8, a chunk per delta; a failure after the start as a last line."""
    carry = ""
    try:
        if type(relay.first) is not str:
            yield b""  # no text yet: the server sends the headers now all the same
        for text in relay.texts():
            data, carry = utf8(carry + text)
            if data:
                yield data
        if carry:
            yield REPLACEMENT
        relay.end("complete")
    except Exception as error:
        message = relay.failed(error)
        if message:
            yield f"\n[error: {message}]".encode()


def stream_events(relay: Relay) -> Generator[bytes]:
    """Server-Sent Events: metadata, a token event per delta, a ping comment per silence, then done."""
    pump = relay.pump
    assert pump is not None
    first: Delta | BaseException = relay.first
    try:
        yield sse.frame({"type": "metadata", **relay.metadata})
        if first is SILENT:
            first = pump.next(relay.ping_s)
        for item in relay.counted(first, functools.partial(pump.next, relay.ping_s)):
            if type(item) is str:
                yield sse.frame({"type": "token", "content": item})
            elif type(item) is Reasoning:
                yield sse.frame({"type": "reasoning", "content": str(item)})
            else:
                yield sse.PING
        usage = relay.usage
        relay.end("complete")  # stored before the client hears that it is done
        yield sse.frame({"type": "done", "usage": usage.as_dict() if usage else None, "status": "complete"})
    except Exception as error:
        message = relay.failed(error)
        if message:
            yield sse.frame({"type": "error", "message": message})
    finally:
        relay.finished = True
