"""The load generator: many concurrent requests on loopback, each body read as it arrives."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from .server import SECRET_KEY


@dataclass
class Result:
    """One request as the client saw it: status, timings (seconds from the send) and the body."""

    status: int = 0
    ttfb: float = 0.0  # to the first body byte (through the service: the first delta)
    total: float = 0.0
    body: bytes = b""
    error: str | None = None
    arrivals: list[float] = field(default_factory=list)  # when body bytes came (seconds from the send)


@dataclass
class Reader(asyncio.Protocol):
    """Sends one request; keeps the raw answer and when its parts arrived."""

    request: bytes
    done: asyncio.Future[Result]
    first_marker: bytes | None = None  # where the first body chunk is not yet a delta (direct SSE)
    pause: float = 0.0  # a slow reader: after each read, this long before the next
    raw: bytearray = field(default_factory=bytearray)
    started: float = 0.0
    head_end: int = -1
    length: int | None = None  # Content-Length, when the answer is not chunked
    result: Result = field(default_factory=Result)
    transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.started = time.perf_counter()
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.raw += data
        if self.head_end < 0:
            self.head_end = self.raw.find(b"\r\n\r\n")
            if self.head_end < 0:
                return
            head = bytes(self.raw[: self.head_end]).lower()
            self.result.status = int(head[9:12])
            for line in head.split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    self.length = int(line[15:])
            if len(self.raw) == self.head_end + 4 and self.length != 0:
                return
        if not self.result.ttfb and (self.first_marker is None or self.first_marker in data):
            self.result.ttfb = now - self.started
        self.result.arrivals.append(now - self.started)
        if self.pause and self.transport is not None:
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(self.pause, self.resume)
        if self.length is not None:
            ended = len(self.raw) - self.head_end - 4 >= self.length
        else:
            ended = self.raw.endswith(b"\n0\r\n\r\n")
        if ended:
            self.result.total = now - self.started
            self.finish()

    def resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.result.total = time.perf_counter() - self.started
            self.result.error = self.result.error or "connection closed early"
            self.finish()

    def finish(self) -> None:
        if self.done.done():
            return
        body = bytes(self.raw[self.head_end + 4 :])
        self.result.body = body if self.length is not None else dechunk(body)
        self.done.set_result(self.result)
        if self.transport is not None:
            self.transport.close()


def dechunk(data: bytes) -> bytes:
    """The body of a chunked HTTP message."""
    out = bytearray()
    at = 0
    while True:
        line_end = data.find(b"\r\n", at)
        if line_end < 0:
            return bytes(out)
        size = int(data[at:line_end].split(b";")[0] or b"0", 16)
        if not size:
            return bytes(out)
        out += data[line_end + 2 : line_end + 2 + size]
        at = line_end + 4 + size


def post(path: str, payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {SECRET_KEY}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


async def fetch(
    port: int, request: bytes, first_marker: bytes | None = None, timeout: float = 60.0, pause: float = 0.0
) -> Result:
    """Send one request and wait for its whole answer (read slowly with a ``pause`` after each read)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Result] = loop.create_future()
    try:
        await loop.create_connection(
            lambda: Reader(request, done, first_marker, pause=pause), "127.0.0.1", port
        )
        return await asyncio.wait_for(done, timeout)
    except (OSError, TimeoutError) as error:
        return Result(error=type(error).__name__)


async def fetch_many(
    port: int, request: bytes, count: int, first_marker: bytes | None = None, ramp_s: float = 0.0
) -> list[Result]:
    """``count`` requests at once, or started evenly over ``ramp_s`` seconds."""

    async def one(index: int) -> Result:
        if ramp_s:
            await asyncio.sleep(ramp_s * index / count)
        return await fetch(port, request, first_marker)

    return list(await asyncio.gather(*(one(index) for index in range(count))))
