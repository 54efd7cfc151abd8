"""The benchmark's scenarios: each starts its fake upstream and the service, loads them, measures.

The service runs exactly as the Procfile runs it, with one gevent worker. Where the machine
has two cores or more, the service is pinned to one and this process and the fake upstream
to another (``sched_setaffinity``, what ``taskset`` does), so the figures are per core.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..support import ROOT, LiveServer, Result, fetch, fetch_many, free_port, post

CORES = sorted(os.sched_getaffinity(0))
SERVER_CPUS = {CORES[0]}
LOAD_CPUS = {CORES[1]} if len(CORES) > 1 else {CORES[0]}
MARKERS = {"chat": b'"delta": {"content": "', "responses": b'"type": "response.output_text.delta"'}
PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses"}
ASK = {"message": "hi"}


def pinning() -> str:
    if SERVER_CPUS == LOAD_CPUS:
        return f"one core ({CORES[0]}): service, load and fake upstream share it"
    server, load = min(SERVER_CPUS), min(LOAD_CPUS)
    return f"service pinned to core {server}; load generator and fake upstream to core {load}"


def cpu_ns(pid: int) -> int:
    """CPU time a process has used, in all its threads (gevent's resolver runs in threads)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            total += int(stat.read_text().split()[0])
    return total


class Helper:
    """A process of the benchmark's own, pinned to ``cpus``; the first line it prints says it is ready."""

    def __init__(self, module: str, args: list[str], cpus: set[int]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, cpus),
        )
        assert self.process.stdout is not None
        self.ready = self.process.stdout.readline().strip()

    def cpu_ns(self) -> int:
        return cpu_ns(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


class Upstream(Helper):
    """The fast fake upstream in a process of its own."""

    def __init__(self, deltas: int, delay: float, burst_deltas: int = 0) -> None:
        self.deltas = deltas
        args = ["--port", str(free_port()), "--deltas", str(deltas), "--delay", str(delay)]
        super().__init__("tests.bench.upstream", [*args, "--burst-deltas", str(burst_deltas)], LOAD_CPUS)
        self.base_url = self.ready
        self.port = int(self.base_url.rsplit(":", 1)[1].split("/")[0])
        self.expected = "".join(f" tok{i}" for i in range(deltas)).encode()
        self.expected_burst = "".join(f" tok{i}" for i in range(burst_deltas)).encode()

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_stats", timeout=5) as answer:
            return json.loads(answer.read())  # type: ignore[no-any-return]

    def direct(self, api: str) -> bytes:
        """A request for the upstream itself, as the service would send it."""
        return post(PATHS[api], {"model": "gpt-4o-mini", "stream": True, "input": "hi"})


class Served(LiveServer):
    """A WSGI app served as the Procfile serves the service, one gevent worker, pinned."""

    def __init__(self, settings: dict[str, str], app: str | None = None) -> None:
        super().__init__(settings, cpus=SERVER_CPUS, app=app)
        self.request = post("/api/chat/stream", ASK)

    def cpu_ns(self) -> int:
        return cpu_ns(self.worker_pid())


class Service(Served):
    """The service as the Procfile runs it, on the fake upstream."""

    def __init__(self, upstream: Upstream, api: str, **settings: str) -> None:
        settings = {
            "OPENAI_API_KEY": "sk-bench",
            "OPENAI_BASE_URL": upstream.base_url,
            "OPENAI_API": api,
            "LOG_LEVEL": "WARNING",
            **settings,
        }
        super().__init__(settings)

    def rss_kb(self) -> int:
        with open(f"/proc/{self.worker_pid()}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")


class Floor(Helper):
    """The raw gevent relay (``floor.py``) on the service's core: what Python + gevent cost here."""

    def __init__(self, upstream: Upstream, api: str) -> None:
        self.port = free_port()
        args = ["--port", str(self.port), "--upstream", upstream.base_url, "--api", api]
        super().__init__("tests.bench.floor", args, SERVER_CPUS)
        self.request = post("/api/chat/stream", ASK)


class Framework(Served):
    """The floor's relay served as the service is (``framework.py``): ``bare`` for gunicorn alone,
    ``flask`` for gunicorn with Flask; what the server and the framework cost here."""

    def __init__(self, upstream: Upstream, api: str, app: str) -> None:
        settings = {"FLOOR_UPSTREAM": upstream.base_url, "FLOOR_API": api}
        super().__init__(settings, app=f"tests.bench.framework:create({app!r})")


def checked(results: list[Result], expected: bytes) -> int:
    """How many requests failed: an error, a status other than 200, or a body not byte for byte."""
    return sum(1 for r in results if r.error or r.status != 200 or r.body != expected)


def p(values: list[float], share: float) -> float:
    """The ``share`` percentile, in milliseconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000.0


def latency(api: str, count: int) -> dict[str, Any]:
    """1 client, ``count`` sequential streams of 20 deltas, read directly, through the floor relay
    and through the service, in turn (so a change in the machine's pace hits all three); then the
    same with the floor's relay behind gunicorn and behind gunicorn + Flask in the service's place
    (in a pass of their own, so the service's figures are taken as they always were)."""
    upstream = Upstream(deltas=20, delay=0.0)
    try:
        with running(Floor(upstream, api)) as floor:
            with running(Service(upstream, api)) as service:
                served, served_cpu_us = in_turn(upstream, api, {"floor": floor, "service": service}, count)
            with (
                running(Framework(upstream, api, "bare")) as bare,
                running(Framework(upstream, api, "flask")) as flask,
            ):
                relays = {"floor": floor, "gunicorn": bare, "flask": flask}
                framed, framed_cpu_us = in_turn(upstream, api, relays, count)
    finally:
        upstream.stop()
    direct, relayed = served["direct"], served["service"]
    return {
        "api": api,
        "requests": count,
        "errors": checked(relayed, upstream.expected),
        "floor_errors": checked(served["floor"], upstream.expected),
        "direct_ttfb_p50_ms": p([r.ttfb for r in direct], 0.5),
        "direct_ttfb_p99_ms": p([r.ttfb for r in direct], 0.99),
        "service_ttfb_p50_ms": p([r.ttfb for r in relayed], 0.5),
        "service_ttfb_p99_ms": p([r.ttfb for r in relayed], 0.99),
        "added_ttfb_p50_ms": added_ttfb(relayed, direct),
        "floor_added_ttfb_p50_ms": added_ttfb(served["floor"], direct),
        "direct_total_p50_ms": p([r.total for r in direct], 0.5),
        "service_total_p50_ms": p([r.total for r in relayed], 0.5),
        "service_total_p99_ms": p([r.total for r in relayed], 0.99),
        "server_cpu_us_per_request": served_cpu_us["service"],
        "floor_cpu_us_per_request": served_cpu_us["floor"],
        "framework": {
            "floor_added_ttfb_p50_ms": added_ttfb(framed["floor"], framed["direct"]),
            "floor_errors": checked(framed["floor"], upstream.expected),
            "gunicorn_added_ttfb_p50_ms": added_ttfb(framed["gunicorn"], framed["direct"]),
            "gunicorn_cpu_us_per_request": framed_cpu_us["gunicorn"],
            "gunicorn_errors": checked(framed["gunicorn"], upstream.expected),
            "flask_added_ttfb_p50_ms": added_ttfb(framed["flask"], framed["direct"]),
            "flask_cpu_us_per_request": framed_cpu_us["flask"],
            "flask_errors": checked(framed["flask"], upstream.expected),
        },
    }


@contextlib.contextmanager
def running(relay: Any) -> Iterator[Any]:
    """A started relay (or the service), stopped on the way out."""
    try:
        yield relay
    finally:
        relay.stop()


def in_turn(
    upstream: Upstream, api: str, relays: dict[str, Any], count: int
) -> tuple[dict[str, list[Result]], dict[str, float]]:
    """20 rounds to warm up, then ``count``: in each, one stream read directly, then one through each
    relay. The results by relay (and "direct"), and each relay's worker CPU per request in µs."""
    direct_request = upstream.direct(api)

    async def run() -> dict[str, list[Result]]:
        results: dict[str, list[Result]] = {name: [] for name in ("direct", *relays)}
        for warm_up in [True] * 20 + [False] * count:
            answers = [await fetch(upstream.port, direct_request, MARKERS[api])]
            answers += [await fetch(relay.port, relay.request) for relay in relays.values()]
            if not warm_up:
                for name, answer in zip(results, answers, strict=True):
                    results[name].append(answer)
        return results

    cpu_before = {name: relay.cpu_ns() for name, relay in relays.items()}
    results = asyncio.run(run())
    cpu_us = {
        name: (relay.cpu_ns() - cpu_before[name]) / 1e3 / (count + 20) for name, relay in relays.items()
    }
    return results, cpu_us


def added_ttfb(relayed: list[Result], direct: list[Result]) -> float:
    """The median time to first byte a relay added to the direct read of the same round, in ms."""
    return statistics.median(r.ttfb - d.ttfb for r, d in zip(relayed, direct, strict=True)) * 1000.0


def concurrency(api: str, streams: int, ramp_s: float = 0.0, direct_too: bool = False) -> dict[str, Any]:
    """``streams`` concurrent streams of 50 deltas 20 ms apart through one worker, all at once
    or started evenly over ``ramp_s`` seconds (all done counts from the first start)."""
    upstream = Upstream(deltas=50, delay=0.02)
    service = Service(upstream, api)
    figures: dict[str, Any] = {"api": api, "streams": streams, "ramp_s": ramp_s}
    try:

        async def run(port: int, request: bytes, marker: bytes | None) -> tuple[list[Result], float, int]:
            peak = 0
            sampling = True

            async def sample() -> None:
                nonlocal peak
                while sampling:
                    peak = max(peak, service.rss_kb())
                    await asyncio.sleep(0.02)

            sampler = asyncio.ensure_future(sample())
            started = time.perf_counter()
            results = await fetch_many(port, request, streams, marker, ramp_s)
            elapsed = time.perf_counter() - started
            sampling = False
            await sampler
            return results, elapsed, peak

        if direct_too:
            results, elapsed, _ = asyncio.run(run(upstream.port, upstream.direct(api), MARKERS[api]))
            figures["direct_all_done_s"] = elapsed
            figures["floor"] = floor_concurrency(upstream, api, streams, ramp_s)
        asyncio.run(fetch_many(service.port, service.request, 20))  # warm up
        base_kb = service.rss_kb()
        cpu_before = service.cpu_ns()
        results, elapsed, peak_kb = asyncio.run(run(service.port, service.request, None))
        cpu_ms = (service.cpu_ns() - cpu_before) / 1e6
    finally:
        service.stop()
        upstream.stop()
    ok = [r for r in results if not r.error and r.status == 200]
    if direct_too:
        figures["server_cpu_ms_per_open"] = open_cost(api, streams)
    figures.update(
        server_cpu_ms_per_1000_paced_deltas=cpu_ms / (streams * upstream.deltas) * 1000,
        errors=checked(results, upstream.expected),
        all_done_s=elapsed,
        ttfb_p50_ms=p([r.ttfb for r in ok], 0.5) if ok else None,
        ttfb_p99_ms=p([r.ttfb for r in ok], 0.99) if ok else None,
        rss_base_mb=base_kb / 1024,
        rss_per_stream_kb=(peak_kb - base_kb) / streams,
    )
    return figures


def floor_concurrency(upstream: Upstream, api: str, streams: int, ramp_s: float) -> dict[str, Any]:
    """The same streams through the floor relay on the service's core."""
    floor = Floor(upstream, api)
    try:
        asyncio.run(fetch_many(floor.port, floor.request, 20))  # warm up
        cpu_before = floor.cpu_ns()
        started = time.perf_counter()
        results = asyncio.run(fetch_many(floor.port, floor.request, streams, None, ramp_s))
        elapsed = time.perf_counter() - started
        cpu_ms = (floor.cpu_ns() - cpu_before) / 1e6
    finally:
        floor.stop()
    ok = [r for r in results if not r.error and r.status == 200]
    return {
        "all_done_s": elapsed,
        "errors": checked(results, upstream.expected),
        "ttfb_p50_ms": p([r.ttfb for r in ok], 0.5) if ok else None,
        "ttfb_p99_ms": p([r.ttfb for r in ok], 0.99) if ok else None,
        "cpu_ms_per_1000_paced_deltas": cpu_ms / (streams * upstream.deltas) * 1000,
    }


def python_pace() -> float:
    """Microseconds for ``sum(range(1000))`` on the service's core: how fast this machine runs
    Python today, for comparing runs on different days."""
    script = "import timeit; print(min(timeit.repeat('sum(range(1000))', number=2000)) / 2000 * 1e6)"
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: os.sched_setaffinity(0, SERVER_CPUS),
    )
    return float(out.stdout)


def open_cost(api: str, streams: int) -> float:
    """Worker CPU per stream of a single delta, ``streams`` at once: what opening a stream costs."""
    upstream = Upstream(deltas=1, delay=0.02)
    service = Service(upstream, api)
    try:
        asyncio.run(fetch_many(service.port, service.request, 20))  # warm up
        cpu_before = service.cpu_ns()
        asyncio.run(fetch_many(service.port, service.request, streams))
        return (service.cpu_ns() - cpu_before) / 1e6 / streams
    finally:
        service.stop()
        upstream.stop()


def fairness(api: str, paced: int, bursts: int) -> dict[str, Any]:
    """``paced`` streams (50 deltas 20 ms apart) alone, then beside ``bursts`` unpaced 20,000-delta
    replies read slowly, with UPSTREAM_TIMEOUT_S=2: do the bursts hold the paced streams up?"""
    upstream = Upstream(deltas=50, delay=0.02, burst_deltas=20_000)
    service = Service(upstream, api, ALLOWED_MODELS="gpt-4o-mini,burst", UPSTREAM_TIMEOUT_S="2")
    burst_request = post("/api/chat/stream", {"message": "hi", "model": "burst"})
    figures: dict[str, Any] = {"api": api, "paced": paced, "bursts": bursts}
    try:

        async def run(burst_count: int) -> tuple[list[Result], list[Result]]:
            loads = [
                asyncio.ensure_future(fetch(service.port, burst_request, pause=0.01))
                for _ in range(burst_count)
            ]
            if loads:
                await asyncio.sleep(0.3)  # the bursts are under way
            results = await fetch_many(service.port, service.request, paced)
            return results, list(await asyncio.gather(*loads))

        asyncio.run(fetch_many(service.port, service.request, 20))  # warm up
        for case, burst_count in (("alone", 0), ("beside_bursts", bursts)):
            results, burst_results = asyncio.run(run(burst_count))
            ok = [r for r in results if not r.error and r.status == 200]
            gaps = [b - a for r in ok for a, b in zip(r.arrivals, r.arrivals[1:], strict=False)]
            figures[case] = {
                "errors": checked(results, upstream.expected),
                "burst_errors": checked(burst_results, upstream.expected_burst),
                "ttfb_p99_ms": p([r.ttfb for r in ok], 0.99) if ok else None,
                "gap_p99_ms": p(gaps, 0.99) if gaps else None,
                "gap_max_ms": max(gaps) * 1000 if gaps else None,
            }
    finally:
        service.stop()
        upstream.stop()
    return figures


def throughput(api: str, rounds: int) -> dict[str, Any]:
    """8 streams of 2,000 unpaced deltas at once, ``rounds`` times: deltas per second and CPU per delta."""
    upstream = Upstream(deltas=2000, delay=0.0)
    service = Service(upstream, api)
    try:

        async def run(port: int, request: bytes, marker: bytes | None) -> tuple[list[Result], float]:
            results: list[Result] = []
            started = time.perf_counter()
            for _ in range(rounds):
                results += await fetch_many(port, request, 8, marker)
            return results, time.perf_counter() - started

        _, direct_s = asyncio.run(run(upstream.port, upstream.direct(api), MARKERS[api]))
        asyncio.run(run(service.port, service.request, None))  # warm up
        cpu_before = service.cpu_ns()
        results, elapsed = asyncio.run(run(service.port, service.request, None))
        cpu_ms = (service.cpu_ns() - cpu_before) / 1e6
    finally:
        service.stop()
        upstream.stop()
    deltas = 8 * 2000 * rounds
    return {
        "api": api,
        "deltas": deltas,
        "errors": checked(results, upstream.expected),
        "direct_deltas_per_s": deltas / direct_s,
        "deltas_per_s": deltas / elapsed,
        "server_cpu_ms_per_1000_deltas": cpu_ms / deltas * 1000,
    }


def disconnect(api: str, trials: int) -> dict[str, Any]:
    """Time from a client's close to the upstream seeing its request closed, streaming and silent."""
    figures: dict[str, Any] = {"api": api, "trials": trials}
    for case, delay in (("streaming", 0.02), ("silent", 30.0)):
        upstream = Upstream(deltas=5000, delay=delay)
        service = Service(upstream, api)
        delays = []
        try:
            for _ in range(trials):
                before = len(upstream.stats()["early_closes"])
                sock = socket.create_connection(("127.0.0.1", service.port), timeout=10)
                sock.sendall(service.request)
                received = b""
                while b"tok0" not in received:
                    received += sock.recv(65536)
                time.sleep(0.05)
                sock.close()
                hung_up = time.monotonic()
                deadline = hung_up + 5
                closes: list[float] = []
                while len(closes) <= before and time.monotonic() < deadline:
                    time.sleep(0.002)
                    closes = upstream.stats()["early_closes"]
                delays.append(closes[-1] - hung_up if len(closes) > before else float("inf"))
        finally:
            service.stop()
            upstream.stop()
        figures[f"{case}_p50_ms"] = p(delays, 0.5)
        figures[f"{case}_max_ms"] = max(delays) * 1000.0
    return figures


def new_conversation(service: Service) -> str:
    request = urllib.request.Request(
        f"{service.url}/api/conversations",
        data=b"{}",
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return str(json.loads(answer.read())["id"])


def stored_replies(service: Service, conversation_id: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{service.url}/api/conversations/{conversation_id}", timeout=10) as answer:
        return [m for m in json.loads(answer.read())["messages"] if m["role"] == "assistant"]


def turn_latency(api: str, count: int) -> dict[str, Any]:
    """1 client: a stateless stream, then a conversation turn (SQLite), ``count`` times; added TTFB."""
    upstream = Upstream(deltas=20, delay=0.0)
    service = Service(upstream, api)
    try:
        conversations = [new_conversation(service) for _ in range(10)]  # ~count/10 turns of history each
        turns = [post("/api/chat/stream", {"conversation_id": c, "message": "hi"}) for c in conversations]

        async def run() -> tuple[list[Result], list[Result]]:
            stateless, turned = [], []
            for n in range(20 + count):
                plain = await fetch(service.port, service.request)
                turn = await fetch(service.port, turns[n % len(turns)])
                if n >= 20:  # after a warm-up
                    stateless.append(plain)
                    turned.append(turn)
            return stateless, turned

        stateless, turned = asyncio.run(run())
        stored = [reply for c in conversations for reply in stored_replies(service, c)]
    finally:
        service.stop()
        upstream.stop()
    added = [(t.ttfb - s.ttfb) for s, t in zip(stateless, turned, strict=True)]
    return {
        "api": api,
        "requests": count,
        "errors": checked(turned, upstream.expected) + checked(stateless, upstream.expected),
        "stateless_ttfb_p50_ms": p([r.ttfb for r in stateless], 0.5),
        "turn_ttfb_p50_ms": p([r.ttfb for r in turned], 0.5),
        "turn_ttfb_p99_ms": p([r.ttfb for r in turned], 0.99),
        "turn_added_ttfb_p50_ms": statistics.median(added) * 1000.0,
        "stored_complete": sum(1 for r in stored if r["status"] == "complete"),
        "stored": len(stored),
    }


def turn_concurrency(api: str, turns: int) -> dict[str, Any]:
    """``turns`` concurrent turns in as many conversations, 2 workers sharing one SQLite file."""
    upstream = Upstream(deltas=50, delay=0.02)
    service = Service(upstream, api, WEB_CONCURRENCY="2")
    try:
        conversations = [new_conversation(service) for _ in range(turns)]
        requests = [post("/api/chat/stream", {"conversation_id": c, "message": "hi"}) for c in conversations]

        async def run() -> tuple[list[Result], float]:
            started = time.perf_counter()
            results = await asyncio.gather(*(fetch(service.port, request) for request in requests))
            return list(results), time.perf_counter() - started

        results, elapsed = asyncio.run(run())
        stored = [reply for c in conversations for reply in stored_replies(service, c)]
        log = service.log_text()
    finally:
        service.stop()
        upstream.stop()
    complete = [r for r in stored if r["status"] == "complete" and r["content"] == upstream.expected.decode()]
    return {
        "api": api,
        "turns": turns,
        "errors": checked(results, upstream.expected),
        "all_done_s": elapsed,
        "stored_complete": len(complete),
        "database_locked": log.count("database is locked"),
    }
