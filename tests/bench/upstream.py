"""A fast fake OpenAI-compatible upstream for benchmarks, in a process of its own.

Every reply's bytes are rendered once, up front, as HTTP chunks in the real wire format
(the test fake's renderers); a stream is then only ``transport.write`` calls. Paced
streams are driven by one 1 ms ticker rather than a timer each, so thousands of streams
cost the fake little. ``GET /_stats`` reports open streams and when early closes arrived
(``time.monotonic()``, which is one clock for every process on the machine). A request
naming the model ``burst`` gets ``--burst-deltas`` deltas all at once (a model or cache that
streams as fast as the network allows), whatever the pacing of the others.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import defaultdict

from ..fake_upstream import ChatEvents, ResponsesEvents

TICK_S = 0.001


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def render(api: str, deltas: list[str]) -> list[bytes]:
    """The reply as frames: headers and start events, one frame per delta, then the end."""
    events = ResponsesEvents("gpt-4o-mini") if api == "responses" else ChatEvents("gpt-4o-mini", _USAGE)
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
        b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n"
    )
    frames = [head + chunk(events.start())]
    frames += [chunk(events.delta(text)) for text in deltas]
    frames.append(chunk(events.finish(len(deltas), True)) + b"0\r\n\r\n")
    return frames


_USAGE = {"stream_options": {"include_usage": True}}


class Fake:
    """Shared state: the rendered replies, the pacing wheel, and what was seen."""

    def __init__(self, deltas: int, delay: float, burst_deltas: int = 0) -> None:
        words = [f" tok{i}" for i in range(deltas)]
        self.frames = {api: render(api, words) for api in ("chat", "responses")}
        burst = [f" tok{i}" for i in range(burst_deltas)]
        self.bursts = {api: b"".join(render(api, burst)) for api in ("chat", "responses")}
        self.delay_ticks = round(delay / TICK_S)
        self.wheel: defaultdict[int, list[Stream]] = defaultdict(list)
        self.started = time.monotonic()
        self.open = 0
        self.streams = 0
        self.early_closes: list[float] = []

    def now_tick(self) -> int:
        return int((time.monotonic() - self.started) / TICK_S)

    async def tick(self) -> None:
        done = self.now_tick()
        while True:
            await asyncio.sleep(TICK_S)
            now = self.now_tick()
            for tick in range(done + 1, now + 1):
                for stream in self.wheel.pop(tick, ()):
                    stream.send(tick)
            done = now


class Stream(asyncio.Protocol):
    """One connection: reads requests, writes the rendered reply (paced or all at once)."""

    def __init__(self, fake: Fake) -> None:
        self.fake = fake
        self.buffer = b""
        self.frames: list[bytes] = []
        self.index = 0  # the next frame to send; 0 when no reply is going
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = self.buffer[:end].lower().split(b"\r\n")
        length = next((int(line[15:]) for line in lines if line.startswith(b"content-length:")), 0)
        if len(self.buffer) < end + 4 + length:
            return
        body = self.buffer[end + 4 : end + 4 + length]
        self.buffer = self.buffer[end + 4 + length :]
        self.respond(lines[0].split(b" ", 2)[1], b'"burst"' in body)

    def respond(self, path: bytes, burst: bool = False) -> None:
        assert self.transport is not None
        if path.startswith(b"/_stats"):
            fake = self.fake
            body = json.dumps({"open": fake.open, "streams": fake.streams, "early_closes": fake.early_closes})
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                % (len(body), body.encode())
            )
            if path.startswith(b"/_stats/reset"):
                fake.early_closes.clear()
            return
        api = "responses" if path.endswith(b"/responses") else "chat"
        self.fake.streams += 1
        if burst:
            self.transport.write(self.fake.bursts[api])
            return
        self.frames = self.fake.frames[api]
        self.fake.open += 1
        if not self.fake.delay_ticks:
            self.transport.write(b"".join(self.frames))
            self.fake.open -= 1
            return
        self.index = 0
        self.send(self.fake.now_tick())

    def send(self, tick: int) -> None:
        """Write the next frame (the first one with the first delta; the last delta with the end)."""
        if self.transport is None or self.transport.is_closing():
            return
        frames = self.frames
        data = frames[self.index] + frames[self.index + 1] if self.index == 0 else frames[self.index]
        self.index += 2 if self.index == 0 else 1
        if self.index == len(frames) - 1:
            self.transport.write(data + frames[-1])
            self.index = 0
            self.fake.open -= 1
            return
        self.transport.write(data)
        self.fake.wheel[tick + self.fake.delay_ticks].append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.index:  # closed by the client while a reply was still going
            self.fake.early_closes.append(time.monotonic())
            self.fake.open -= 1
            self.index = 0
        self.transport = None


async def serve(port: int, deltas: int, delay: float, burst_deltas: int) -> None:
    fake = Fake(deltas, delay, burst_deltas)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Stream(fake), "127.0.0.1", port, backlog=8192)
    print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", flush=True)
    await fake.tick()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--deltas", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.02, help="seconds between deltas (0: all at once)")
    parser.add_argument("--burst-deltas", type=int, default=0, help="deltas of the 'burst' model's replies")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.deltas, args.delay, args.burst_deltas))


if __name__ == "__main__":
    main()
