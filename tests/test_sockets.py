"""A peek at a socket: what waits on it, without taking it, waiting, or changing the socket."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import gevent.socket  # type: ignore[import-untyped]
import pytest

from app.sockets import peek


class Watched(socket.socket):
    """A standard socket that records every change of its timeout (another thread may be writing)."""

    changes: list[float | None]

    def settimeout(self, value: float | None) -> None:
        self.changes.append(value)
        super().settimeout(value)

    def setblocking(self, flag: bool) -> None:
        self.changes.append(None if flag else 0.0)
        super().setblocking(flag)


@pytest.fixture
def pair() -> Iterator[tuple[Watched, socket.socket]]:
    left, right = socket.socketpair()
    watched = Watched(left.family, left.type, fileno=left.detach())
    watched.changes = []
    yield watched, right
    watched.close()
    right.close()


@pytest.mark.parametrize("timeout", [None, 30.0], ids=["blocking", "with-a-timeout"])
def test_a_peek_tells_quiet_data_and_closed_and_never_touches_the_socket(
    pair: tuple[Watched, socket.socket], timeout: float | None
) -> None:
    sock, peer = pair
    socket.socket.settimeout(sock, timeout)  # set before watching
    started = time.monotonic()
    assert peek(sock) == "quiet"
    assert time.monotonic() - started < 1.0  # not the socket's timeout
    peer.sendall(b"x")
    assert peek(sock) == "data"
    assert sock.recv(1) == b"x"  # the peek took nothing: it is all still there
    peer.close()
    assert peek(sock) == "closed"
    assert (sock.changes, sock.gettimeout()) == ([], timeout)


def test_a_closed_socket_cannot_be_peeked() -> None:
    sock, peer = socket.socketpair()
    sock.close()
    peer.close()
    assert peek(sock) is None


class Unread(gevent.socket.socket):  # type: ignore[misc]
    """A gevent socket that must not be read through: its reads wait on (and run) the event loop."""

    def recv(self, *args: object) -> bytes:
        raise AssertionError("the peek read through gevent's socket, not the one it wraps")


def test_under_gevent_the_peek_goes_to_the_socket_it_wraps() -> None:
    plain_left, right = socket.socketpair()
    left = Unread(plain_left.family, plain_left.type, fileno=plain_left.detach())
    try:
        left.settimeout(30.0)
        started = time.monotonic()
        assert peek(left) == "quiet"
        assert time.monotonic() - started < 1.0
        right.sendall(b"y")
        assert peek(left) == "data"
        assert left.gettimeout() == 30.0
    finally:
        left.close()
        right.close()
