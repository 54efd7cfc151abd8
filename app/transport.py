"""HTTP/1.1 to the model server: a pooled, streaming ``httpx2`` transport of our own.

The SDK still builds, authenticates, retries and maps errors; only the wire is ours. What
the generic stack (httpx2 -> httpcore2 -> h11) spent per request and per read, and this
does not (measured with the paced 1,000-stream benchmark, one gevent worker):

- no pass over the pool at each request's start and end probing every idle connection
  with ``select.poll`` (under gevent a round-trip through the hub each): the one connection
  taken is checked with a non-blocking peek, a plain system call;
- no per-read ``settimeout``: a connection's timeout changes only when the value does;
- the chunked body is cut by hand (each chunk's data comes out as it arrives, as with h11);
- no resolver thread for a numeric host.

Each request hands its socket to the reply that sends it (``connections.sending``) before
a byte is written, so the reply can hang up before the model's headers. Errors are
httpx2's own types, so the SDK and ``llm`` map them as before. The environment's proxies
still go through the SDK client's proxy transports (see ``llm``); only direct
connections come here.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2

from . import connections

READ_SIZE = 1 << 16
UNANSWERED_WITHIN_S = 0.25  # a kept-alive connection that ends this soon after a request: resent
MAX_HEAD_BYTES = 1 << 16  # the status line and headers of one response
MAX_LINE_BYTES = 1 << 12  # a chunk's size line, or a trailer


class Connection:
    """One socket to the server, with the bytes read past the current message."""

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
        raw = getattr(self.sock, "_sock", None)  # gevent's socket wraps a non-blocking OS one
        try:
            if raw is not None:
                raw.recv(1, socket.MSG_PEEK)
            else:  # the standard library's (threads: tests, the command line), maybe TLS
                self.sock.settimeout(0.0)
                self.timeout = 0.0
                socket.socket.recv(self.sock, 1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False  # the server closed it, or sent something nobody asked for

    def close(self) -> None:
        self.live.discard(self)
        with contextlib.suppress(OSError):
            self.sock.close()


class Unanswered(Exception):
    """A kept-alive connection failed before any byte of an answer: the request may go again."""

    def __init__(self, error: httpx2.HTTPError) -> None:
        super().__init__(str(error))
        self.error = error


class Transport(httpx2.BaseTransport):
    """HTTP/1.1 over kept-alive connections, most recently used first."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        max_connections: int,
        max_idle: int,
        keepalive_expiry: float = 5.0,
    ) -> None:
        self.ssl_context = ssl_context
        ssl_context.set_alpn_protocols(["http/1.1"])
        self.max_idle = max_idle
        self.keepalive_expiry = keepalive_expiry
        self.slots = threading.BoundedSemaphore(max_connections)  # connections in use
        self.idle: dict[tuple[bytes, bytes, int], collections.deque[Connection]] = {}
        self.live: set[Connection] = set()  # every open connection, idle or in use: close() ends all
        self.closed = False

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx2.UnsupportedProtocol(f"Unsupported URL scheme {scheme!r}", request=request)
        port = url.port or (443 if scheme == b"https" else 80)
        key = (scheme, url.raw_host, port)
        timeouts = request.extensions.get("timeout", {})
        if not self.slots.acquire(timeout=timeouts.get("pool")):
            raise httpx2.PoolTimeout("No connection came free in time.", request=request)
        try:
            connection = self._take(key)
            reused = connection is not None
            connection = connection or self._connect(key, timeouts.get("connect"), request)
        except BaseException:
            self.slots.release()
            raise
        try:
            return self._send(key, connection, request, timeouts, reused)
        except Unanswered as unanswered:
            # A kept-alive connection the server closed just as it was taken (its idle timeout
            # racing ours): nothing of an answer came, so the request goes once more on a new one.
            if getattr(connections.holder(), "cancelled", False):
                raise unanswered.error from None  # the reply hung up: no new request for it
        if not self.slots.acquire(timeout=timeouts.get("pool")):
            raise httpx2.PoolTimeout("No connection came free in time.", request=request)
        try:
            connection = self._connect(key, timeouts.get("connect"), request)
        except BaseException:
            self.slots.release()
            raise
        try:
            return self._send(key, connection, request, timeouts, reused=False)
        except Unanswered as unanswered:  # only raised for a kept-alive connection
            raise unanswered.error from None

    def _send(
        self,
        key: tuple[bytes, bytes, int],
        connection: Connection,
        request: httpx2.Request,
        timeouts: Any,
        reused: bool,
    ) -> httpx2.Response:
        """Write the request on ``connection`` and read the response's head (Unanswered: a
        kept-alive connection failed before any byte of an answer)."""
        url = request.url
        body = Body(self, key, connection, request, timeouts.get("read"))
        try:
            holder = connections.holder()
            if holder is not None:
                holder.hold(connection.sock)
            head = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), url.raw_path)]
            head += [b"%s: %s\r\n" % pair for pair in request.headers.raw]
            head.append(b"\r\n")
            content = request.read()
            connection.settimeout(timeouts.get("write"))
            written = None
            try:
                connection.sock.sendall(b"".join(head) + content)
            except TimeoutError as error:
                raise httpx2.WriteTimeout(str(error) or "write timed out", request=request) from None
            except OSError as error:
                raise httpx2.WriteError(str(error) or type(error).__name__, request=request) from None
            written = time.monotonic()
            status, reason, headers = body.read_head(request.method == "HEAD")
        except (httpx2.WriteError, httpx2.ReadError, httpx2.RemoteProtocolError) as error:
            body.close()
            # Sent again only when the server cannot have started on it: the write failed, or
            # the connection ended at once after it (a close that crossed the request). A
            # server that fails later may have worked on it (a model thinking): not twice.
            at_once = written is None or time.monotonic() - written < UNANSWERED_WITHIN_S
            if reused and not body.received and at_once:
                raise Unanswered(error) from None
            raise
        except BaseException:
            body.close()
            raise
        return httpx2.Response(
            status,
            headers=headers,
            stream=body,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    def _take(self, key: tuple[bytes, bytes, int]) -> Connection | None:
        """The most recently used idle connection that is still good, if any."""
        idle = self.idle.get(key)
        if not idle:
            return None
        stale_before = time.monotonic() - self.keepalive_expiry
        while idle:
            connection = idle.pop()
            if connection.idle_since > stale_before and connection.alive():
                return connection
            connection.close()
        return None

    def _connect(
        self, key: tuple[bytes, bytes, int], timeout: float | None, request: httpx2.Request
    ) -> Connection:
        scheme, raw_host, port = key
        host = raw_host.decode("ascii")
        try:
            family = numeric_family(host)
            if family is None:
                sock = socket.create_connection((host, port), timeout)
            else:  # no resolver (under gevent a thread-pool round-trip) for a numeric host
                sock = socket.socket(family, socket.SOCK_STREAM)
                try:
                    sock.settimeout(timeout)
                    sock.connect((host, port))
                except BaseException:
                    sock.close()
                    raise
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if scheme == b"https":
                    sock = self.ssl_context.wrap_socket(sock, server_hostname=host)
            except BaseException:
                sock.close()
                raise
        except TimeoutError as error:
            raise httpx2.ConnectTimeout(str(error) or "connect timed out", request=request) from None
        except OSError as error:
            raise httpx2.ConnectError(str(error) or type(error).__name__, request=request) from None
        connection = Connection(sock, timeout, self.live)
        self.live.add(connection)
        return connection

    def _release(self, key: tuple[bytes, bytes, int], connection: Connection | None) -> None:
        """Give back a connection's slot; keep the connection for reuse when it is given."""
        self.slots.release()
        if connection is None:
            return
        if self.closed:
            connection.close()
            return
        idle = self.idle.setdefault(key, collections.deque())
        now = time.monotonic()
        connection.idle_since = now
        idle.append(connection)
        stale_before = now - self.keepalive_expiry
        while idle and (len(idle) > self.max_idle or idle[0].idle_since <= stale_before):
            idle.popleft().close()  # the oldest first

    def close(self) -> None:
        self.closed = True
        self.idle.clear()
        for connection in list(self.live):  # in use too, as httpcore2's pool does
            connection.close()


class Body(httpx2.SyncByteStream):
    """One response: its head, then its body as it arrives (each chunk's data as it comes)."""

    def __init__(
        self,
        transport: Transport,
        key: tuple[bytes, bytes, int],
        connection: Connection,
        request: httpx2.Request,
        read_timeout: float | None,
    ) -> None:
        self.transport = transport
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
        self.transport._release(self.key, connection)


@functools.lru_cache(maxsize=64)
def numeric_family(host: str) -> socket.AddressFamily | None:
    """AF_INET or AF_INET6 for an IP address, None for a name to resolve."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


def client_transport(client: httpx2.Client, transport: Transport) -> httpx2.Client:
    """Send a client's direct requests through ``transport``; its proxy transports stay."""
    previous: Any = client._transport
    client._transport = transport
    previous.close()
    return client
