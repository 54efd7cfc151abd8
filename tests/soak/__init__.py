"""The soak (``python -m tests.soak``, ``make soak``): many mixed streams through one gevent worker.

A quarter complete as plain text, a quarter as SSE, a quarter are left by their client
after the first chunk, and a quarter meet a failing upstream (a cut mid-stream, or an
HTTP 500). Leaks show as growth between the end of a warm-up and the end of the run:
the worker's RSS, its open descriptors, its live greenlets, and streams still open at
the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..fake_upstream import FakeUpstream, Script
from ..support import SECRET_KEY, LiveServer, wait_until

KINDS = ("text", "sse", "leave", "fail")
WORDS = [f" w{i}" for i in range(20)]


class Soak:
    """The fake upstream, the service on it, and the probes into the worker."""

    def __init__(self) -> None:
        self.upstream = FakeUpstream(Script(deltas=WORDS)).start()
        self.state = Path(tempfile.mkdtemp(prefix="soak-")) / "state"
        self.server = LiveServer(
            {
                "OPENAI_API_KEY": SECRET_KEY,
                "OPENAI_BASE_URL": self.upstream.base_url,
                "ALLOWED_MODELS": "cut,broken",
                "LOG_LEVEL": "WARNING",
                "CHAT_STATE_FILE": str(self.state),
            },
            config=Path(__file__).with_name("gunicorn_conf.py"),
        )

    def stop(self) -> None:
        self.server.stop()
        self.upstream.stop()

    def probe(self) -> dict[str, Any]:
        pid = self.server.worker_pid()
        state = Path(f"{self.state}.{pid}")
        state.unlink(missing_ok=True)
        os.kill(pid, signal.SIGUSR2)
        wait_until(state.exists, timeout=5, interval=0.02)  # written by the worker's signal handler
        with open(f"/proc/{pid}/status") as status:
            rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        ss = subprocess.run(
            ["ss", "-Htn", "state", "established", f"dport = :{self.upstream.port}"],
            capture_output=True,
            text=True,
            check=False,
        )
        pooled = len(ss.stdout.splitlines())  # idle keep-alive connections the pools hold
        return {
            "rss_mb": round(rss_kb / 1024, 1),
            "fds_besides_pool": len(os.listdir(f"/proc/{pid}/fd")) - pooled,
            "pooled_upstream": pooled,
            "greenlets": int(state.read_text()) if state.exists() else None,
            "upstream_open": self.upstream.open_streams(),
        }

    def settled(self, timeout: float = 10.0) -> dict[str, Any]:
        """A probe once the worker's greenlets have stopped changing for longer than a finished
        stream's client watcher lingers (``hangup.POLL_MS``)."""
        last = self.probe()
        still_since = time.monotonic()
        deadline = still_since + timeout
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = self.probe()
            if now["greenlets"] != last["greenlets"] or now["upstream_open"]:
                last, still_since = now, time.monotonic()
            elif time.monotonic() - still_since > 1.25:
                return now
        return last

    def run(self, streams: int, concurrency: int = 64) -> Counter[str]:
        """Send ``streams`` requests, ``concurrency`` at a time; count what each ended as."""
        port = self.server.port

        async def one(index: int, gate: asyncio.Semaphore) -> str:
            kind = KINDS[index % 4]
            body: dict[str, Any] = {"message": f"soak {index}"}
            if kind == "fail":
                body["model"] = "cut" if index % 8 == 3 else "broken"
            data = json.dumps(body).encode()
            accept = "text/event-stream" if kind == "sse" else "*/*"
            request = (
                f"POST /api/chat/stream HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
                f"Accept: {accept}\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
            ).encode() + data
            async with gate:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                try:
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = head.split(b" ", 2)[1].decode()
                    if kind == "leave":
                        await reader.read(64)
                        return "left"
                    answer = await reader.read()
                    if status != "200":
                        return f"status {status}"
                    return "in-band error" if b"error" in answer else f"complete ({kind})"
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()

        async def main() -> list[str]:
            gate = asyncio.Semaphore(concurrency)
            return list(await asyncio.gather(*(one(i, gate) for i in range(streams))))

        return Counter(asyncio.run(main()))


def soak(streams: int, warmup: int = 1000) -> dict[str, Any]:
    """Warm up, probe, run ``streams`` mixed streams, let watchers wind down, probe again."""
    bench = Soak()
    bench.upstream.per_model = {"cut": Script(deltas=WORDS, cut_after=3), "broken": Script(status=500)}
    try:
        bench.run(warmup)
        before = bench.settled()

        started = time.monotonic()
        outcomes = bench.run(streams)
        seconds = time.monotonic() - started
        after = bench.settled()
    finally:
        bench.stop()
    return {
        "streams": streams,
        "seconds": round(seconds, 1),
        "outcomes": dict(outcomes),
        "before": before,
        "after": after,
    }
