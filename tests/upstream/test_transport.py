"""The upstream transport against a server that drops a kept-alive connection as it is reused."""

from __future__ import annotations

import socket
import threading
import time

import httpx2
import pytest

from app.upstream.transport import Transport

from ..support.tcp import Listener

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class Dropper:
    """Answers the first request of each connection and drops the connection at the second: with
    the request left unread (``read=False``: a server whose idle timeout crossed it; the kernel
    resets a socket closed with bytes unread), or read first, ``drop_after`` seconds before the
    close (a server that took the request, and could have started a model on it)."""

    def __init__(self, read: bool, drop_after: float = 0.0) -> None:
        self.read = read
        self.drop_after = drop_after
        self.requests = 0  # requests read
        self.listener = Listener(self._serve)
        self.port = self.listener.port

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            if not self._read_request(sock):
                return
            sock.sendall(ANSWER)
            if not self.read:
                sock.recv(1, socket.MSG_PEEK)  # the second request has come: closed unread
                return
            if self._read_request(sock):
                time.sleep(self.drop_after)

    def _read_request(self, sock: socket.socket) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return False
            data += chunk
        self.requests += 1
        return True

    @property
    def connections(self) -> int:
        return self.listener.connections

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def transport() -> Transport:
    return Transport(httpx2.create_ssl_context(), max_connections=4, max_idle=4)


def test_a_request_the_server_never_read_goes_again_on_a_new_connection(transport: Transport) -> None:
    server = Dropper(read=False)
    try:
        with httpx2.Client(transport=transport) as client:
            answers = [client.get(f"http://127.0.0.1:{server.port}/") for _ in range(3)]
        assert [(a.status_code, a.content) for a in answers] == [(200, b"ok")] * 3
        # Each reuse met a connection reset with the request unread: it went again on a new one,
        # and each request was read once.
        assert (server.connections, server.requests) == (3, 3)
        assert transport.live == set()
    finally:
        server.close()


@pytest.mark.parametrize("drop_after", [0.0, 0.5], ids=["at-once", "after-a-while"])
def test_a_request_the_server_read_is_never_sent_twice(transport: Transport, drop_after: float) -> None:
    server = Dropper(read=True, drop_after=drop_after)
    try:
        with httpx2.Client(transport=transport) as client:
            assert client.get(f"http://127.0.0.1:{server.port}/").status_code == 200
            with pytest.raises(httpx2.RemoteProtocolError, match="Server disconnected without sending"):
                client.get(f"http://127.0.0.1:{server.port}/")
        assert (server.connections, server.requests) == (1, 2)  # a model may have started on it
    finally:
        server.close()


def test_a_new_connection_that_fails_is_not_tried_again() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]

        def hang_up() -> None:
            sock, _ = silent.accept()
            sock.recv(65536)
            sock.close()  # reads the request, answers nothing

        threading.Thread(target=hang_up, daemon=True).start()
        transport = Transport(httpx2.create_ssl_context(), max_connections=4, max_idle=4)
        with httpx2.Client(transport=transport) as client, pytest.raises(httpx2.RemoteProtocolError):
            client.get(f"http://127.0.0.1:{port}/")
