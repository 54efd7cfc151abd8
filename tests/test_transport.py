"""The upstream transport against a server that drops a kept-alive connection as it is reused."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx2
import pytest

from app.transport import Transport

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


class Reads:
    """A connection whose reads return the given pieces, then the end of the stream."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = list(pieces)
        self.sock = self

    def settimeout(self, timeout: float | None) -> None:
        pass

    def recv(self, size: int) -> bytes:
        return self.pieces.pop(0) if self.pieces else b""

    def close(self) -> None:
        self.pieces = []


class Pool:
    """Where a body gives its connection back (None: closed)."""

    def __init__(self) -> None:
        self.released: list[object] = []

    def _release(self, key: object, connection: object) -> None:
        self.released.append(connection)


HEAD = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
CHUNKED = b"6\r\ndata: \r\n3;x=y\r\none\r\nd\r\n\n\ndata: two\n\n\r\n0\r\nx-trailer: 1\r\n\r\n"
DATA = b"data: one\n\ndata: two\n\n"


def body_pieces(reads: list[bytes]) -> tuple[list[bytes], Pool, Reads]:
    from app.transport import Body

    pool, connection = Pool(), Reads(reads)
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    body = Body(pool, (b"http", b"127.0.0.1", 80), connection, request, None)  # type: ignore[arg-type]
    body.read_head(False)
    return list(body), pool, connection


def test_each_chunk_comes_as_a_piece_of_its_own_even_when_one_read_holds_them_all() -> None:
    # Chunks a single read brought stay apart: joining them would join deltas the client gets apart.
    pieces, pool, connection = body_pieces([HEAD + CHUNKED])
    assert pieces == [b"data: ", b"one", b"\n\ndata: two\n\n"]
    assert pool.released == [connection]  # read to its end: kept for the next request


def test_a_chunked_body_cut_anywhere_comes_whole() -> None:
    whole = HEAD + CHUNKED
    for cut in range(len(HEAD), len(whole)):
        for second in range(cut, len(whole)):
            reads = [whole[:cut], whole[cut:second], whole[second:]]
            pieces, pool, connection = body_pieces([r for r in reads if r])
            assert b"".join(pieces) == DATA, (cut, second)
            assert all(pieces), (cut, second)
            assert pool.released == [connection], (cut, second)


@pytest.mark.parametrize(
    ("chunked", "error"),
    [
        (b"3\r\nonetoo long\r\n0\r\n\r\n", "A chunk does not end where its size says."),
        (b"zz\r\none\r\n0\r\n\r\n", "Invalid chunk size."),
        (b"-3\r\none\r\n0\r\n\r\n", "Invalid chunk size."),
        (b"3\r\none\r\n", "peer closed connection without sending complete message body"),
    ],
)
def test_a_broken_chunked_body_is_a_protocol_error(chunked: bytes, error: str) -> None:
    with pytest.raises(httpx2.RemoteProtocolError, match=error):
        body_pieces([HEAD + chunked])
