"""One HTTP/1.1 response read off a connection to the model server: its head, then its body
as its framing says (chunked, a length, or until the server closes), each chunk's data as it
arrives. Errors are httpx2's own types, so the SDK maps them as it maps its own transport's.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Protocol

import httpx2

from ..sockets import peek

READ_SIZE = 1 << 16
MAX_HEAD_BYTES = 1 << 16  # the status line and headers of one response
MAX_LINE_BYTES = 1 << 12  # a chunk's size line, or a trailer


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
    """One response: its head, then its body as it arrives (each chunk's data as it comes)."""

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
        self.buffer = b""
        self.framing = "close"  # "chunked", "length", "empty" or "close" (until the server closes)
        self.length = 0
        self.reusable = False
        self.http11 = True
        self.done = False
        self.received = False  # any byte of the answer

    def recv(self) -> bytes:
        connection = self.connection
        if connection is None:
            raise httpx2.ReadError("The response was closed.", request=self.request)
        connection.settimeout(self.read_timeout)
        try:
            data = connection.sock.recv(READ_SIZE)
            self.received = self.received or bool(data)
            return data
        except TimeoutError as error:
            raise httpx2.ReadTimeout(str(error) or "read timed out", request=self.request) from None
        except OSError as error:
            raise httpx2.ReadError(str(error) or type(error).__name__, request=self.request) from None

    def read_head(self, head_request: bool) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        while True:
            status, reason, headers = self._one_head()
            if not 100 <= status < 200:
                break  # an informational response (103 Early Hints) is read past
        names = {name.lower(): value for name, value in headers}
        connection = names.get(b"connection", b"").lower()
        self.reusable = self.http11 and b"close" not in connection
        encoding = names.get(b"transfer-encoding", b"").lower()
        if head_request or status in (204, 304):
            self.framing = "empty"
        elif encoding:
            if not encoding.endswith(b"chunked"):
                self.framing, self.reusable = "close", False
            else:
                self.framing = "chunked"
        elif b"content-length" in names:
            try:
                self.length = int(names[b"content-length"])
            except ValueError:
                raise self.protocol_error("Invalid Content-Length.") from None
            if self.length < 0:
                raise self.protocol_error("Invalid Content-Length.")
            self.framing = "length"
        else:
            self.reusable = False
        return status, reason, headers

    def _one_head(self) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise self.protocol_error("The response head is too long.")
            data = self.recv()
            if not data:
                raise self.protocol_error("Server disconnected without sending a response.")
            self.buffer += data
        head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        try:
            version, status = parts[0], int(parts[1])
        except (IndexError, ValueError):
            raise self.protocol_error("Invalid status line.") from None
        if not version.startswith(b"HTTP/1.") or not 100 <= status <= 999:
            raise self.protocol_error("Invalid status line.")
        self.http11 = version == b"HTTP/1.1"
        headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise self.protocol_error("Invalid header line.")
            headers.append((name, value.strip(b" \t")))
        return status, parts[2] if len(parts) > 2 else b"", headers

    def protocol_error(self, message: str) -> httpx2.RemoteProtocolError:
        return httpx2.RemoteProtocolError(message, request=self.request)

    def __iter__(self) -> Iterator[bytes]:
        if self.framing == "chunked":
            yield from self._chunked()
        elif self.framing == "length":
            yield from self._sized()
        elif self.framing == "close":
            yield from self._until_close()
        self.done = True
        self.close()

    def _more(self) -> None:
        data = self.recv()
        if not data:
            raise self.protocol_error("peer closed connection without sending complete message body")
        self.buffer += data

    def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > MAX_LINE_BYTES:
                raise self.protocol_error("A chunk's size line is too long.")
            self._more()
        line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
        return line

    def _chunked(self) -> Iterator[bytes]:
        """Each chunk's data as it arrives (as h11 gives it: a chunk is never joined to the next)."""
        while True:
            try:
                size = int(self._line().split(b";", 1)[0], 16)
            except ValueError:
                raise self.protocol_error("Invalid chunk size.") from None
            if size < 0:
                raise self.protocol_error("Invalid chunk size.")
            if size == 0:
                while self._line():  # trailers, up to the empty line
                    pass
                return
            while size:
                if not self.buffer:
                    self._more()
                piece = self.buffer[:size]
                self.buffer = self.buffer[size:]
                size -= len(piece)
                yield piece
            while len(self.buffer) < 2:
                self._more()
            if self.buffer[:2] != b"\r\n":
                raise self.protocol_error("A chunk does not end where its size says.")
            self.buffer = self.buffer[2:]

    def _sized(self) -> Iterator[bytes]:
        left = self.length
        while left:
            if not self.buffer:
                self._more()
            piece, self.buffer = self.buffer[:left], self.buffer[left:]
            left -= len(piece)
            yield piece

    def _until_close(self) -> Iterator[bytes]:
        if self.buffer:
            yield self.buffer
            self.buffer = b""
        while data := self.recv():
            yield data

    def close(self) -> None:
        """Keep the connection for the next request if the body was read to its end; else close it."""
        connection, self.connection = self.connection, None
        if connection is None:
            return
        if not (self.done and self.reusable and not self.buffer):
            connection.close()
            connection = None
        self.pool.release(self.key, connection)
