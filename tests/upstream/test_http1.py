"""Reading a response off a connection: its head, and a chunked body cut at every byte."""

from __future__ import annotations

import gc
import weakref

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
        (b"3\r\nonetoo long\r\n0\r\n\r\n", "Malformed response: Expected LF after chunk data."),
        (b"zz\r\none\r\n0\r\n\r\n", "Malformed response: Invalid character in chunk size."),
        (b"-3\r\none\r\n0\r\n\r\n", "Malformed response: Invalid character in chunk size."),
        (b"+3\r\none\r\n0\r\n\r\n", "Malformed response: Invalid character in chunk size."),
        (b"0x3\r\none\r\n0\r\n\r\n", "Malformed response: Invalid character in chunk size."),
        (b"3\r\none\r\n", "peer closed connection without sending complete message body"),
    ],
)
def test_a_broken_chunked_body_is_a_protocol_error(chunked: bytes, error: str) -> None:
    with pytest.raises(httpx2.RemoteProtocolError, match=error):
        body_pieces([HEAD + chunked])


def test_a_body_that_breaks_after_a_good_head_breaks_where_it_is_read() -> None:
    # The head came whole: the response is the caller's, and its first chunk too, before the error.
    pool, connection = Pool(), Reads([HEAD + b"3\r\none\r\nzz\r\n"])
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    body = Body(pool, (b"http", b"127.0.0.1", 80), connection, request, None)  # type: ignore[arg-type]
    assert body.read_head(False)[0] == 200
    pieces = iter(body)
    assert next(pieces) == b"one"
    with pytest.raises(httpx2.RemoteProtocolError, match="Invalid character in chunk size"):
        next(pieces)
    body.close()  # as the response does when its reader gives up
    assert pool.released == [None]  # closed, never kept


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 2x0 OK\r\ncontent-length: 2\r\n\r\nok",  # a status that is not a number
        b"HTTP/1.1 20 OK\r\ncontent-length: 2\r\n\r\nok",  # a status of two digits
        b"HTTP/1.x 200 OK\r\ncontent-length: 2\r\n\r\nok",  # no version
        b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok",  # int() takes these four
        b"HTTP/1.1 200 OK\r\ncontent-length: 0x2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ncontent-length: 0_2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ncontent-length: -2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",  # two lengths
        b"HTTP/1.1 200 OK\r\ncontent length: 2\r\n\r\nok",  # a space in a name
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ],
    ids=[
        "status",
        "short-status",
        "version",
        "plus",
        "hex",
        "underscore",
        "negative",
        "two-lengths",
        "name",
        "length-and-chunked",
    ],
)
def test_a_malformed_head_is_a_protocol_error_never_a_guess(head: bytes) -> None:
    pool, connection = Pool(), Reads([head])
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    body = Body(pool, (b"http", b"127.0.0.1", 80), connection, request, None)  # type: ignore[arg-type]
    with pytest.raises(httpx2.RemoteProtocolError, match=r"^Malformed response: "):
        body.read_head(False)


def test_an_informational_response_is_read_past_and_a_length_frames_the_body() -> None:
    head = b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"
    pool, connection = Pool(), Reads([head + b"he", b"llo"])
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    body = Body(pool, (b"http", b"127.0.0.1", 80), connection, request, None)  # type: ignore[arg-type]
    assert body.read_head(False) == (200, b"OK", [(b"content-length", b"5")])
    assert list(body) == [b"he", b"llo"]
    assert pool.released == [connection]


def test_a_body_without_framing_ends_when_the_server_closes_and_the_connection_goes() -> None:
    pool, connection = Pool(), Reads([b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall", b" of it"])
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    body = Body(pool, (b"http", b"127.0.0.1", 80), connection, request, None)  # type: ignore[arg-type]
    body.read_head(False)
    assert b"".join(body) == b"all of it"
    assert pool.released == [None]


def test_bytes_past_the_response_never_become_part_of_it() -> None:
    # A second response in the same read as the first: the first stays what it was, whole, and its
    # connection is not kept (what the server meant by the rest is not guessed).
    first = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-one: 1\r\n\r\nok"
    second = b"HTTP/1.1 404 Nope\r\ncontent-length: 5\r\nx-two: 2\r\n\r\nhello"
    pool, connection = Pool(), Reads([first + second])
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    body = Body(pool, (b"http", b"127.0.0.1", 80), connection, request, None)  # type: ignore[arg-type]
    assert body.read_head(False) == (200, b"OK", [(b"content-length", b"2"), (b"x-one", b"1")])
    assert list(body) == [b"ok"]
    assert pool.released == [None]


def test_a_closed_body_goes_with_its_last_reference() -> None:
    # The worker collects reference cycles rarely (gunicorn.conf.py): a body left in one would
    # hold its buffers until then, for every reply.
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    body = Body(Pool(), (b"http", b"127.0.0.1", 80), Reads([HEAD + CHUNKED]), request, None)  # type: ignore[arg-type]
    body.read_head(False)
    assert b"".join(body) == DATA  # read to its end, which closes it
    gc.disable()
    try:
        gone = weakref.ref(body)
        del body
        assert gone() is None
    finally:
        gc.enable()
