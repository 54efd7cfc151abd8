"""Upstream connections that a reply can hang up at any moment, before the model's headers too.

The SDK sends each request on a pooled connection, new or kept alive, and shows which one
only with the response headers, which many gateways hold back until the first token. So
whichever connection writes a request while a reply is being sent hands its socket to that
reply (``holder()``), and ``Reply.cancel()`` can shut it down. Direct connections are
``transport.Transport``'s, which does so itself; the environment's proxies go through
httpcore2's pools on the network backend wrapped here (``proxied``).
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import ssl
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import httpcore2
import httpx2
from httpx2._utils import get_environment_proxies


class Holder(Protocol):
    """What takes hold of the connection a request goes out on (a reply in flight)."""

    cancelled: bool  # it hung up

    def hold(self, sock: socket.socket | None) -> None: ...


class HungUp(Exception):
    """The reply hung up while its request was being sent, answered or about to be retried: not
    one of httpx2's errors, so the SDK passes it on at once instead of trying again."""


# Set by the greenlet (or thread) that sends a request, for as long as the SDK call lasts.
_sending: contextvars.ContextVar[Holder | None] = contextvars.ContextVar("sending", default=None)


@contextlib.contextmanager
def sending(holder: Holder) -> Iterator[None]:
    """Hand the connection of each request sent inside the block to ``holder``."""
    token = _sending.set(holder)
    try:
        yield
    finally:
        _sending.reset(token)


def holder() -> Holder | None:
    """Who takes hold of a request's connection now (``sending``), if anyone."""
    return _sending.get()


def hung_up() -> bool:
    """Has the reply whose request is being sent hung up?"""
    sender = _sending.get()
    return sender is not None and sender.cancelled


class Stream(httpcore2.NetworkStream):
    """One connection's stream: tells the sending reply its socket before each write."""

    def __init__(self, stream: httpcore2.NetworkStream) -> None:
        self.stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.stream.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        holder = _sending.get()
        if holder is not None:
            holder.hold(self.stream.get_extra_info("socket"))
        self.stream.write(buffer, timeout)

    def close(self) -> None:
        self.stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore2.NetworkStream:
        return Stream(self.stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self.stream.get_extra_info(info)


class Backend(httpcore2.NetworkBackend):
    """httpcore2's own blocking backend, its streams wrapped in ``Stream``."""

    def __init__(self) -> None:
        self.backend = httpcore2.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        return Stream(self.backend.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.NetworkStream:
        return Stream(self.backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self.backend.sleep(seconds)


def proxied(limits: httpx2.Limits, tls: ssl.SSLContext) -> dict[str, httpx2.BaseTransport | None]:
    """The environment's proxies (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``) as an
    httpx2 client's ``mounts=``: each proxy's transport on the wrapped backend, and None (the
    client's own transport: direct) for the hosts ``NO_PROXY`` names.

    A client given its own ``transport=`` reads no proxies from the environment, so they are read
    here, by httpx2's own reading of them (a private function). httpcore2's pools take a backend
    only when they are built, and httpx2's transports build theirs without one: so it is swapped
    in before any connection exists (a transport's ``_pool``, a pool's ``_network_backend``).
    Each private name is checked by tests/test_contracts.py. Proxied requests only.
    """
    mounts: dict[str, httpx2.BaseTransport | None] = {}
    for pattern, url in get_environment_proxies().items():
        if url is None:
            mounts[pattern] = None
            continue
        proxy = httpx2.HTTPTransport(verify=tls, limits=limits, proxy=url)
        proxy._pool._network_backend = Backend()
        mounts[pattern] = proxy
    return mounts
