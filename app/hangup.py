"""The client watcher: hang up on the model as soon as the client hangs up, even while it is silent.

Without it, a departure shows only when a write fails, which during a long silence is never.
It needs the client's socket, which only gunicorn hands to the app (``gunicorn.socket`` in
the WSGI environ); under another server nothing is watched. Under the gevent worker the
thread it starts is a greenlet.
"""

from __future__ import annotations

import _thread
import contextlib
import select
import socket
import struct
import time
from collections.abc import Generator
from typing import Protocol

POLL_MS = 1000  # how long a finished reply's watcher may linger


class Watched(Protocol):
    """The reply being watched."""

    def over(self) -> bool:
        """Is the reply ended and written (as far as the server tells)?"""
        ...

    writes: Writes  # the chunk the server is writing, if any

    def hung_up(self, reason: str | None) -> None:
        """The client left (``reason``: why, when it did not just close the connection)."""
        ...


class Writes:
    """When the server took a chunk it has not yet written: it asks for the next once it wrote one."""

    __slots__ = ("handed_at", "timeout_s")

    def __init__(self, timeout_s: float) -> None:
        self.handed_at: float | None = None
        self.timeout_s = timeout_s

    def timed(self, body: Generator[bytes]) -> Generator[bytes]:
        """``body``, noting when each chunk goes to the server."""
        with contextlib.closing(body):
            for chunk in body:
                self.handed_at = time.monotonic()
                yield chunk
                self.handed_at = None

    def stalled(self) -> bool:
        """Has the server been writing one chunk for longer than the client may take?"""
        handed_at = self.handed_at
        return handed_at is not None and time.monotonic() - handed_at > self.timeout_s


def start(client: socket.socket, reply: Watched) -> None:
    """Watch ``client`` for ``reply`` in a thread (a greenlet under gevent) of its own."""
    _thread.start_new_thread(watch, (client, reply))


def watch(client: socket.socket, reply: Watched) -> str:
    """Watch until the reply is over or the client left; how it ended (for tests): "over" when
    the reply was over, "gone" or "stalled" when the client left, "unreadable" otherwise."""
    reason = None
    try:
        # poll, not select: select() cannot take descriptors past 1023, which a busy worker has.
        poller = select.poll()
        poller.register(client, select.POLLIN)  # fails if the client already left and it closed
        while not reply.over():
            if poller.poll(POLL_MS):
                if reply.over():
                    return "over"  # the server reads the connection's next request now: hands off
                if not client.recv(1, socket.MSG_PEEK):
                    break  # the end of the client's stream: it closed the connection
                # It sent more (a pipelined request): a hang-up no longer shows, a stall does.
                poller.unregister(client)
            if reply.writes.stalled():
                reason = "client_stalled"
                drop(client)
                break
        else:
            return "over"
    except ConnectionResetError:
        pass
    except (OSError, ValueError):
        # The socket closed after the reply, or something unforeseen. Only a sure hang-up
        # may end a reply early; any other departure shows at the next write.
        return "unreadable"
    reply.hung_up(reason)
    return reason or "gone"


def drop(client: socket.socket) -> None:
    """Reset a client that takes nothing: the server's waiting write fails at once, and the
    kernel keeps no unsent reply for it."""
    with contextlib.suppress(OSError):
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.shutdown(socket.SHUT_RDWR)
