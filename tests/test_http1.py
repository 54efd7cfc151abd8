"""Reading a response off a connection: its head, and a chunked body cut at every byte."""

from __future__ import annotations

import httpx2
import pytest

from app.upstream.http1 import Body


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

    def release(self, key: object, connection: object) -> None:
        self.released.append(connection)


HEAD = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
CHUNKED = b"6\r\ndata: \r\n3;x=y\r\none\r\nd\r\n\n\ndata: two\n\n\r\n0\r\nx-trailer: 1\r\n\r\n"
DATA = b"data: one\n\ndata: two\n\n"


def body_pieces(reads: list[bytes]) -> tuple[list[bytes], Pool, Reads]:
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
