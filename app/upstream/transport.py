"""HTTP/1.1 to the model server: a pooled, streaming ``httpx2`` transport of our own.

The SDK still builds, authenticates, retries and maps errors; only the wire is ours. What
the generic stack (httpx2 -> httpcore2 -> h11) spent per request and per read, and this
does not (measured with the paced 1,000-stream benchmark, one gevent worker):

- no pass over the pool at each request's start and end probing every idle connection
  with ``select.poll`` (under gevent a round-trip through the hub each): the one connection
  taken is checked with a non-blocking peek, a plain system call;
- no per-read ``settimeout``: a connection's timeout changes only when the value does;
- the response is parsed by llhttp (``http1``, through ``httptools``), each chunk's data coming out
  as it arrives, as with h11: measured per chunk of a Chat Completions stream, 0.24 µs, where h11
  took 11 µs (a third of what the whole relay spends on a delta) and hand parsing 1.4 µs;
- no resolver thread for a numeric host.

Each request hands its socket to the reply that sends it (``connections.sending``) before
a byte is written, so the reply can hang up before the model's headers. Errors are
httpx2's own types, so the SDK and ``llm`` map them as they map httpx2's transport's. The
environment's proxies go through httpx2's own proxy transports (``connections.proxied``); every
other request comes here, by httpx2's public door for it (the client's ``transport=``).

A request is sent again, once, on a new connection only when the server cannot have read it
(``unread``): a kept-alive connection whose write failed, or that the server reset at once,
before any byte of an answer. One the server read and then closed is never sent twice.
"""

from __future__ import annotations

import collections
import functools
import ipaddress
import socket
import ssl
import threading
import time
from typing import Any

import httpx2

from . import connections
from .http1 import Body, Connection

UNANSWERED_WITHIN_S = 0.25  # a kept-alive connection reset this soon after a request: resent
# An idle connection is dropped after this long: before the 5 s that uvicorn (vLLM, LiteLLM) and
# Node's servers keep one, so the server's close rarely crosses a request (see ``unread``).
KEEPALIVE_S = 4.0


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
        keepalive_expiry: float = KEEPALIVE_S,
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
            if connections.hung_up():
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
            if reused and not body.head_bytes and unread(written, body.reset):
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

    def release(self, key: tuple[bytes, bytes, int], connection: Connection | None) -> None:
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


def unread(written: float | None, reset: bool) -> bool:
    """Can the server not have read a request that failed before any byte of an answer?

    Yes when the write itself failed, or when the server reset the connection at once: a socket
    closed with bytes it never read is reset by the kernel. A connection the server ended cleanly
    (it read the request, then closed), or that failed later, may have had a model start on the
    request: it is not sent twice here. A server's idle close that crossed the request on the
    wire (its end arriving before its reset) looks the same and is not resent either: idle
    connections are dropped before common servers drop them (``KEEPALIVE_S``), and one taken is
    peeked first. The SDK's own retries (``OPENAI_MAX_RETRIES``, 0 by default) still apply.
    """
    return written is None or (reset and time.monotonic() - written < UNANSWERED_WITHIN_S)


@functools.lru_cache(maxsize=64)
def numeric_family(host: str) -> socket.AddressFamily | None:
    """AF_INET or AF_INET6 for an IP address, None for a name to resolve."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET
