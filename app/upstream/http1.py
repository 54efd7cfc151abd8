"""One HTTP/1.1 response read off a connection to the model server: its head, then its body as
its framing says (chunked, a length, or until the server closes), each piece of data as it arrives.

The bytes are parsed by llhttp (Node's parser, through ``httptools``), which holds to the HTTP
grammar: a malformed status line, header, chunk size or length, or two Content-Length headers, is
``Malformed`` (one of httpx2's protocol errors), never a guess. Errors are httpx2's own types, so
the SDK maps them as it maps its own transport's; the client gets an upstream error (502).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Protocol

import httptools
import httpx2

from ..sockets import peek

READ_SIZE = 1 << 16
MAX_HEAD_BYTES = 1 << 16  # the status line and headers of one response
NO_BODY = (204, 304)


class Malformed(httpx2.RemoteProtocolError):
    """The server's bytes break the HTTP grammar: what it meant is not guessed."""


class Overrun(Exception):
    """More bytes than the response: the parser is stopped where the response ends."""


class Connection:
    """One socket to the server, with its timeout and, while idle, since when it is idle."""

    __slots__ = ("idle_since", "live", "sock", "timeout")

    def __init__(self, sock: socket.socket, timeout: float | None, live: set[Connection]) -> None:
        self.sock = sock
        self.timeout = timeout
        self.idle_since = 0.0
        self.live = live

    def settimeout(self, timeout: float | None) -> None:
        if timeout != self.timeout:
            self.sock.settimeout(timeout)
            self.timeout = timeout

    def alive(self) -> bool:
        """Is a kept-alive connection still open, and silent (nothing unasked-for waiting)?"""
        return peek(self.sock) == "quiet"

    def close(self) -> None:
        self.live.discard(self)
        with contextlib.suppress(OSError):
            self.sock.close()


class Pool(Protocol):
    """Where a response gives its connection back: kept for the next request, or None if closed."""

    def release(self, key: tuple[bytes, bytes, int], connection: Connection | None) -> None: ...


class Body(httpx2.SyncByteStream):
    """One response: its head, then its body as it arrives (each piece of data as it comes).

    The parser calls back ``on_*`` as it reads; what it found waits here until asked for.
    """

    def __init__(
        self,
        pool: Pool,
        key: tuple[bytes, bytes, int],
        connection: Connection,
        request: httpx2.Request,
        read_timeout: float | None,
    ) -> None:
        self.pool = pool
        self.key = key
        self.connection: Connection | None = connection
        self.request = request
        self.read_timeout = read_timeout
        # The parser holds this body's callbacks, and so the body: dropped at close(), so that
        # the body goes with its last reference (the worker collects cycles rarely).
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head: tuple[int, bytes, list[tuple[bytes, bytes]]] | None = None
        self.head_bytes = 0  # read before the head was whole: any byte of an answer
        self.pieces: list[bytes] = []
        self.complete = False  # the parser read the whole message
        self.until_close = False  # the body ends when the server closes
        self.reusable = False
        self.reset = False  # the server reset the connection (it discarded what it had not read)
        self.failure: Malformed | None = None  # the body broke the grammar past this point

    # The parser's callbacks.
    def on_message_begin(self) -> None:
        if self.complete:  # bytes past the response's end, read as another: never this one's
            raise Overrun

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None  # called back from feed(), before close()
        status = parser.get_status_code()
        if 100 <= status < 200:  # informational (103 Early Hints): read past
            self.reason, self.headers = b"", []
            return
        names = {name.lower(): value for name, value in self.headers}
        chunked = names.get(b"transfer-encoding", b"").rsplit(b",", 1)[-1].strip().lower() == b"chunked"
        self.until_close = status not in NO_BODY and not chunked and b"content-length" not in names
        self.reusable = parser.should_keep_alive() and not self.until_close
        self.head = (status, self.reason, list(self.headers))

    def on_body(self, data: bytes) -> None:
        self.pieces.append(data)

    def on_message_complete(self) -> None:
        if self.head is not None:
            self.complete = True

    def recv(self) -> bytes:
        connection = self.connection
        if connection is None:
            raise httpx2.ReadError("The response was closed.", request=self.request)
        connection.settimeout(self.read_timeout)
        try:
            data = connection.sock.recv(READ_SIZE)
        except TimeoutError as error:
            raise httpx2.ReadTimeout(str(error) or "read timed out", request=self.request) from None
        except OSError as error:
            self.reset = isinstance(error, ConnectionResetError)
            raise httpx2.ReadError(str(error) or type(error).__name__, request=self.request) from None
        return data

    def feed(self, data: bytes) -> None:
        parser = self.parser
        if self.complete or self.failure is not None or parser is None:  # past the response's end
            self.reusable = False
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise self.protocol_error("The server switched protocols.") from None
        except httptools.HttpParserError as error:
            if self.complete:  # past the response's end (an Overrun, or not HTTP): the connection goes
                self.reusable = False
                return
            failure = Malformed(f"Malformed response: {error}.", request=self.request)
            if self.head is None:
                raise failure from None
            # A body that breaks after a good head breaks where it is read, after what came before
            # it: the caller has the response by then (the SDK sends nothing again).
            self.failure, self.reusable = failure, False

    def read_head(self, head_request: bool) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        while self.head is None:
            data = self.recv()
            if not data:
                raise self.protocol_error("Server disconnected without sending a response.")
            self.head_bytes += len(data)
            self.feed(data)
            if self.head is None and self.head_bytes > MAX_HEAD_BYTES:
                raise self.protocol_error("The response head is too long.")
        if head_request:  # the parser cannot be told a HEAD's answer has no body: the head is all
            self.pieces, self.complete, self.reusable = [], True, False
        return self.head

    def protocol_error(self, message: str) -> httpx2.RemoteProtocolError:
        return httpx2.RemoteProtocolError(message, request=self.request)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            if self.pieces:
                pieces, self.pieces = self.pieces, []
                yield from pieces
            if self.failure is not None:
                raise self.failure
            if self.complete:
                break
            if not self.read_more():
                if self.until_close:
                    break
                raise self.protocol_error("peer closed connection without sending complete message body")
        self.close()

    def read_more(self) -> bool:
        """Read and parse what came next; False at the end of the stream.

        Not inline in ``__iter__``: a read's bytes, kept by a suspended generator's frame until its
        next read, would pin what is left of the 64 KiB the read allocated, a hole the next
        read cannot use (measured: 5 KB more RSS per stream in flight)."""
        data = self.recv()
        if not data:
            return False
        self.feed(data)
        return True

    def close(self) -> None:
        """Keep the connection for the next request if the whole response was read off it; else close it."""
        self.parser = None
        connection, self.connection = self.connection, None
        if connection is None:
            return
        if not (self.complete and self.reusable):
            connection.close()
            connection = None
        self.pool.release(self.key, connection)
