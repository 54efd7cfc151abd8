"""Benchmarks of the relay, run as ``python -m tests.bench [scenario ...]``.

Each scenario starts what it needs: the fake upstream in its own process, the service
exactly as the Procfile runs it with one gevent worker, and an asyncio load generator
that reads bodies chunk by chunk and checks every body byte for byte.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from .conftest import SECRET_KEY
from .live.server import ROOT, LiveServer, free_port

CHAT_DELTA = b'"delta": {"content": "'
RESPONSES_DELTA = b'"type": "response.output_text.delta"'


@dataclass
class Result:
    """One request as the load generator saw it."""

    status: int
    ttfb: float  # seconds to the first delta (the first body byte through the service)
    total: float
    body: bytes


async def fetch(port: int, path: str, payload: dict[str, Any], first_marker: bytes | None = None) -> Result:
    """POST ``payload`` and read the chunked answer, noting when the first delta arrived."""
    data = json.dumps(payload).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {SECRET_KEY}\r\nContent-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + data
    )
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    body = bytearray()
    first = 0.0
    if b"chunked" in head.lower():
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = (await reader.readexactly(size + 2))[:-2]
            if not size:
                break
            if not first and (first_marker is None or first_marker in chunk):
                first = time.perf_counter()
            body += chunk
    else:
        body += await reader.read()
        first = time.perf_counter()
    total = time.perf_counter() - started
    writer.close()
    return Result(status, (first or time.perf_counter()) - started, total, bytes(body))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


class Upstream:
    """The fake upstream in a process of its own."""

    def __init__(self, deltas: int, delay: float) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fake_upstream",
                "--port",
                str(self.port),
                "--deltas",
                str(deltas),
                "--delay",
                str(delay),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.base_url = self.process.stdout.readline().strip()
        self.expected = "".join(f" tok{i}" for i in range(deltas)).encode()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def latency(api: str, count: int = 200) -> dict[str, Any]:
    """1 client, ``count`` sequential streams of 20 deltas: TTFB and total, direct and through the service."""
    upstream = Upstream(deltas=20, delay=0.0)
    server = LiveServer(
        {"OPENAI_API_KEY": SECRET_KEY, "OPENAI_BASE_URL": upstream.base_url, "OPENAI_API": api}
    )
    upstream_path = "/v1/responses" if api == "responses" else "/v1/chat/completions"
    marker = RESPONSES_DELTA if api == "responses" else CHAT_DELTA
    upstream_body = {"model": "gpt-4o-mini", "stream": True, "input": "hi", "messages": [{"role": "user"}]}
    try:

        async def run() -> tuple[list[Result], list[Result]]:
            direct, relayed = [], []
            for _ in range(10):  # warm both up
                await fetch(upstream.port, upstream_path, upstream_body, marker)
                await fetch(server.port, "/api/chat/stream", {"message": "hi"})
            for _ in range(count):
                direct.append(await fetch(upstream.port, upstream_path, upstream_body, marker))
                relayed.append(await fetch(server.port, "/api/chat/stream", {"message": "hi"}))
            return direct, relayed

        direct, relayed = asyncio.run(run())
    finally:
        server.stop()
        upstream.stop()
    errors = sum(1 for r in relayed if r.status != 200 or r.body != upstream.expected)
    figures = {
        "api": api,
        "requests": count,
        "errors": errors,
        "direct_ttfb_p50_ms": percentile([r.ttfb for r in direct], 0.5) * 1000,
        "direct_ttfb_p99_ms": percentile([r.ttfb for r in direct], 0.99) * 1000,
        "service_ttfb_p50_ms": percentile([r.ttfb for r in relayed], 0.5) * 1000,
        "service_ttfb_p99_ms": percentile([r.ttfb for r in relayed], 0.99) * 1000,
        "direct_total_p50_ms": percentile([r.total for r in direct], 0.5) * 1000,
        "service_total_p50_ms": percentile([r.total for r in relayed], 0.5) * 1000,
    }
    added = [s.ttfb - d.ttfb for s, d in zip(relayed, direct, strict=True)]
    figures["added_ttfb_p50_ms"] = statistics.median(added) * 1000
    return figures


def concurrency(streams: int, words_delay_ms: int = 20) -> dict[str, Any]:
    """``streams`` concurrent demo-model streams through one gevent worker; errors and timings."""
    server = LiveServer({"DEMO_DELAY_MS": str(words_delay_ms)})
    try:

        async def run() -> tuple[list[Result | BaseException], float]:
            started = time.perf_counter()
            results = await asyncio.gather(
                *(fetch(server.port, "/api/chat/stream", {"message": f"topic {i}"}) for i in range(streams)),
                return_exceptions=True,
            )
            return results, time.perf_counter() - started

        results, elapsed = asyncio.run(run())
    finally:
        server.stop()
    ok = [r for r in results if isinstance(r, Result) and r.status == 200 and r.body.endswith((b".", b")"))]
    return {
        "streams": streams,
        "ok": len(ok),
        "errors": streams - len(ok),
        "ttfb_p50_ms": percentile([r.ttfb for r in ok], 0.5) * 1000 if ok else None,
        "ttfb_p99_ms": percentile([r.ttfb for r in ok], 0.99) * 1000 if ok else None,
        "all_done_s": elapsed,
    }


def disconnect(api: str, trials: int = 20) -> dict[str, Any]:
    """Time from a client's close to the upstream seeing its request closed, silent and streaming."""
    import socket

    from .fake_upstream import FakeUpstream, Script

    upstream = FakeUpstream().start()  # in-process: its records say when each close arrived
    server = LiveServer(
        {"OPENAI_API_KEY": SECRET_KEY, "OPENAI_BASE_URL": upstream.base_url, "OPENAI_API": api}
    )
    payload = json.dumps({"message": "hi"}).encode()
    figures: dict[str, Any] = {"api": api, "trials": trials}
    try:
        for case, script in (
            ("silent", Script(stall_after=1)),
            ("streaming", Script(deltas=[" tok"] * 5000, delay=0.02)),
        ):
            delays = []
            for _ in range(trials):
                upstream.reset(script)
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                sock.sendall(
                    b"POST /api/chat/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
                )
                received = b""
                while b"tok" not in received and b"Hello" not in received:
                    received += sock.recv(65536)
                time.sleep(0.05)
                sock.close()
                hung_up = time.monotonic()
                upstream.wait_until(lambda: upstream.open_streams() == 0, timeout=5.0)
                closed_at = upstream.streams[0].closed_at
                delays.append((closed_at or float("inf")) - hung_up)
            figures[f"{case}_p50_ms"] = percentile(delays, 0.5) * 1000
            figures[f"{case}_max_ms"] = max(delays) * 1000
    finally:
        server.stop()
        upstream.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenarios", nargs="*", default=["latency", "concurrency", "disconnect"])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--streams", type=int, nargs="*", default=[100, 500, 1000])
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    report: dict[str, Any] = {}
    if "latency" in args.scenarios:
        report["latency"] = [latency(api, args.requests) for api in ("chat", "responses")]
        for row in report["latency"]:
            print(
                f"latency {row['api']:9} direct ttfb p50 {row['direct_ttfb_p50_ms']:.2f} ms | "
                f"service ttfb p50 {row['service_ttfb_p50_ms']:.2f} ms "
                f"p99 {row['service_ttfb_p99_ms']:.2f} ms | "
                f"added p50 {row['added_ttfb_p50_ms']:.2f} ms | errors {row['errors']}/{row['requests']}"
            )
    if "concurrency" in args.scenarios:
        report["concurrency"] = [concurrency(n) for n in args.streams]
        for row in report["concurrency"]:
            print(
                f"concurrency {row['streams']:5} demo streams: ok {row['ok']} errors {row['errors']} | "
                f"ttfb p50 {row['ttfb_p50_ms'] or 0:.1f} ms p99 {row['ttfb_p99_ms'] or 0:.1f} ms | "
                f"all done {row['all_done_s']:.2f} s"
            )
    if "disconnect" in args.scenarios:
        report["disconnect"] = [disconnect(api) for api in ("chat", "responses")]
        for row in report["disconnect"]:
            print(
                f"disconnect {row['api']:9} upstream closed after the client's close: "
                f"silent p50 {row['silent_p50_ms']:.2f} ms max {row['silent_max_ms']:.2f} ms | "
                f"streaming p50 {row['streaming_p50_ms']:.2f} ms max {row['streaming_max_ms']:.2f} ms"
            )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
