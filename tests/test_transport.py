"""The upstream transport against a server that drops a kept-alive connection as it is reused."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx2
import pytest

from app.upstream.transport import Transport

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class Dropper:
    """Answers the first request of each connection; a second one on it is read, then dropped
    unanswered, as a server whose idle timeout just ran out does."""

    def __init__(self, drop_after: float = 0.0) -> None:
        self.drop_after = drop_after
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.requests = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            for answered in (True, False):
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                self.requests += 1
                if answered:
                    sock.sendall(ANSWER)
                else:
                    time.sleep(self.drop_after)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def dropper() -> Iterator[Dropper]:
    server = Dropper()
    yield server
    server.close()


def test_a_kept_alive_connection_dropped_unanswered_sends_the_request_again(dropper: Dropper) -> None:
    transport = Transport(httpx2.create_ssl_context(), max_connections=4, max_idle=4)
    with httpx2.Client(transport=transport) as client:
        answers = [client.get(f"http://127.0.0.1:{dropper.port}/") for _ in range(3)]
    assert [(a.status_code, a.content) for a in answers] == [(200, b"ok")] * 3
    # Each reuse met a dropped connection: the request went again on a new one.
    assert (dropper.connections, dropper.requests) == (3, 5)
    assert transport.live == set()


def test_a_kept_alive_connection_dropped_after_a_while_is_not_tried_again() -> None:
    server = Dropper(drop_after=0.5)  # as if the model worked on it before the connection broke
    transport = Transport(httpx2.create_ssl_context(), max_connections=4, max_idle=4)
    try:
        with httpx2.Client(transport=transport) as client:
            assert client.get(f"http://127.0.0.1:{server.port}/").status_code == 200
            with pytest.raises(httpx2.RemoteProtocolError):
                client.get(f"http://127.0.0.1:{server.port}/")
        assert (server.connections, server.requests) == (1, 2)  # never sent twice
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
