"""A socket looked at without taking anything from it or waiting on it.

Under gevent a socket wraps a non-blocking one of the operating system's (its ``_sock``, a private
name: tests/test_contracts.py fails with a sentence if a gevent release changes it); the peek goes
to that one, so it neither waits for data nor lets the event loop run.
"""

from __future__ import annotations

import select
import socket
import ssl


def os_socket(sock: socket.socket) -> socket.socket:
    """The operating system's socket: under gevent, the one its socket wraps."""
    return getattr(sock, "_sock", sock)


def peek(sock: socket.socket) -> str | None:
    """What waits on ``sock``: ``"closed"`` (the peer closed or reset it), ``"data"``, or ``"quiet"``;
    None when it cannot be read at all (closed here, say). A TLS socket's peek sees records, not
    plain text: a peer's close_notify reads as data."""
    raw = os_socket(sock)
    try:
        # The standard library's socket (threads: the tests, the command line) with a timeout
        # polls until its timeout before it reads, MSG_DONTWAIT or not; its timeout is not
        # changed for the peek (another thread may be writing on it): asked first instead.
        if raw is sock and raw.gettimeout() and not select.select([raw], [], [], 0)[0]:
            return "quiet"
        if isinstance(raw, ssl.SSLSocket):  # its own recv refuses flags
            data = socket.socket.recv(raw, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        else:
            data = raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return "quiet"
    except ConnectionResetError:
        return "closed"
    except (OSError, ValueError):
        return None
    return "data" if data else "closed"
