"""The benchmark's scenarios for replies that outlive their connection: conversation turns beside the
stateless row, the database's writes per reply, reader lag across hosts through Redis, and the time
a reattachment takes to its first byte."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

from ..support import Result, fetch, post
from ..support.postgres import PostgresServer, PostgresUnavailable
from ..support.redis_server import RedisServer, RedisUnavailable
from .scenarios import Service, Upstream, checked, new_conversation, p

TURN = {"message": "hi"}


@contextlib.contextmanager
def redis_if(wanted: bool) -> Iterator[RedisServer | None]:
    """A Redis of the benchmark's own when ``wanted``, else None."""
    if not wanted:
        yield None
        return
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


def stored_statuses(service: Service, conversations: list[str]) -> list[tuple[str, str]]:
    """Each conversation's last reply: its status and text."""
    found = []
    for conversation_id in conversations:
        with urllib.request.urlopen(
            f"{service.url}/api/conversations/{conversation_id}", timeout=10
        ) as answer:
            last = json.loads(answer.read())["messages"][-1]
        found.append((last["status"], last["content"]))
    return found


def turns(api: str, count: int, redis: bool) -> dict[str, Any]:
    """``count`` conversation turns at once on one worker (50 deltas 20 ms apart each), right after the
    same number of stateless streams on the same service: worker CPU per 1,000 paced deltas of each,
    opens included. Then the same with one delta each, for what an open costs, and so what a delta
    costs beyond it."""
    paced = cpu_of_turns(api, count, redis, deltas=50)
    opens = cpu_of_turns(api, count, redis, deltas=1)
    figures = paced | {
        "server_cpu_ms_per_1000_paced_deltas": paced["turns_ms"] / (count * 50) * 1000,
        "stateless_cpu_ms_per_1000_paced_deltas": paced["stateless_ms"] / (count * 50) * 1000,
        "ratio": paced["turns_ms"] / paced["stateless_ms"],
        "turn_open_ms": opens["turns_ms"] / count,
        "stateless_open_ms": opens["stateless_ms"] / count,
        "open_errors": opens["errors"] + opens["stateless_errors"],
    }
    # What 49 more deltas cost a reply, per 1,000 deltas: the open taken out.
    for name in ("turns", "stateless"):
        figures[f"{name}_cpu_ms_per_1000_deltas_beyond_the_open"] = (
            (paced[f"{name}_ms"] - opens[f"{name}_ms"]) / (count * 49) * 1000
        )
    figures["delta_ratio"] = (
        figures["turns_cpu_ms_per_1000_deltas_beyond_the_open"]
        / figures["stateless_cpu_ms_per_1000_deltas_beyond_the_open"]
    )
    return figures


def cpu_of_turns(api: str, count: int, redis: bool, deltas: int) -> dict[str, Any]:
    """Worker CPU for ``count`` stateless streams at once, then ``count`` conversation turns."""
    upstream = Upstream(deltas=deltas, delay=0.02)
    with redis_if(redis) as redis_server:
        extra = {"REDIS_URL": redis_server.url} if redis_server else {}
        service = Service(upstream, api, **extra)
        try:
            conversations = [new_conversation(service) for _ in range(count + 20)]
            asks = [post("/api/chat/stream", {"conversation_id": c, **TURN}) for c in conversations]

            async def run(requests: list[bytes]) -> tuple[list[Result], float]:
                started = time.perf_counter()
                results = await asyncio.gather(*(fetch(service.port, request) for request in requests))
                return list(results), time.perf_counter() - started

            asyncio.run(run([service.request] * 20))  # warm up both paths
            asyncio.run(run(asks[count:]))
            cpu_before = service.cpu_ns()
            stateless, stateless_s = asyncio.run(run([service.request] * count))
            stateless_ms = (service.cpu_ns() - cpu_before) / 1e6
            time.sleep(1.5)  # nothing of the stateless streams left to do
            cpu_before = service.cpu_ns()
            results, elapsed = asyncio.run(run(asks[:count]))
            time.sleep(1.5)  # the last replies' checkpoints and ends are stored
            turns_ms = (service.cpu_ns() - cpu_before) / 1e6
            stored = stored_statuses(service, conversations[:count])
        finally:
            service.stop()
            upstream.stop()
    ok = [r for r in results if not r.error and r.status == 200]
    expected = upstream.expected.decode()
    return {
        "api": api,
        "turns": count,
        "redis": redis,
        "errors": checked(results, upstream.expected),
        "stateless_errors": checked(stateless, upstream.expected),
        "stored_complete": sum(1 for status, text in stored if status == "complete" and text == expected),
        "all_done_s": elapsed,
        "stateless_all_done_s": stateless_s,
        "ttfb_p50_ms": p([r.ttfb for r in ok], 0.5) if ok else None,
        "ttfb_p99_ms": p([r.ttfb for r in ok], 0.99) if ok else None,
        "turns_ms": turns_ms,
        "stateless_ms": stateless_ms,
    }


def writes(api: str, count: int) -> dict[str, Any]:
    """Rows a reply's storage writes per second while it runs, read from Postgres's own counters:
    ``count`` turns at once of 150 deltas 20 ms apart (three seconds each)."""
    try:
        postgres = PostgresServer()
    except PostgresUnavailable as error:
        return {"api": api, "skipped": str(error)}
    upstream = Upstream(deltas=150, delay=0.02)
    try:
        database = postgres.new_database()
        service = Service(upstream, api, DATABASE_URL=database)
        name = database.rsplit("/", 1)[1]
        try:
            conversations = [new_conversation(service) for _ in range(count)]
            asks = [post("/api/chat/stream", {"conversation_id": c, **TURN}) for c in conversations]
            before = updated_rows(postgres, name)

            async def run() -> list[Result]:
                return list(await asyncio.gather(*(fetch(service.port, request) for request in asks)))

            started = time.perf_counter()
            results = asyncio.run(run())
            elapsed = time.perf_counter() - started
            time.sleep(1.5)
            updates = updated_rows(postgres, name) - before
            stored = stored_statuses(service, conversations)
        finally:
            service.stop()
    finally:
        upstream.stop()
        postgres.stop()
    seconds = [r.total for r in results if not r.error]
    # Besides its checkpoints, each turn writes its reply's row once more, at its end.
    checkpoints = updates - count
    return {
        "api": api,
        "turns": count,
        "errors": checked(results, upstream.expected),
        "stored_complete": sum(1 for status, _ in stored if status == "complete"),
        "reply_seconds": sum(seconds),
        "all_done_s": elapsed,
        "row_updates": updates,
        "checkpoint_writes_per_reply_second": checkpoints / sum(seconds),
    }


def updated_rows(postgres: PostgresServer, database: str) -> int:
    """Rows of messages updated so far (Postgres counts them per table)."""
    import psycopg

    with psycopg.connect(
        host="127.0.0.1", port=postgres.port, user="postgres", dbname=database
    ) as connection:
        connection.execute("SELECT pg_stat_force_next_flush()")
        time.sleep(0.6)  # the statistics collector's delay
        row = connection.execute(
            "SELECT sum(n_tup_upd) FROM pg_stat_user_tables WHERE relname = 'messages'"
        ).fetchone()
    return int(row[0] or 0) if row else 0


def lag(api: str, count: int) -> dict[str, Any]:
    """Two hosts (gunicorn masters) sharing a database and Redis: ``count`` turns of 50 deltas 20 ms
    apart on the first, each followed from the second. For each event the follower got live, the
    time from the turn's own reader on the writing host getting it to the follower getting it. Then,
    with one long turn running, the time from a reattachment's GET to its first byte, 50 times on
    the writing host and 50 on the other."""
    try:
        redis_server = RedisServer()
    except RedisUnavailable as error:
        return {"api": api, "skipped": str(error)}
    upstream = Upstream(deltas=50, delay=0.02)
    folder = tempfile.TemporaryDirectory(prefix="bench-lag-")
    shared = {"REDIS_URL": redis_server.url, "DATABASE_URL": f"sqlite:///{folder.name}/chat.db"}
    writer = Service(upstream, api, **shared)
    other = Service(upstream, api, **shared)
    try:
        conversations = [new_conversation(writer) for _ in range(count + 1)]

        async def follow_each(conversation_id: str) -> list[float]:
            own = asyncio.ensure_future(timed_events(writer.port, turn_request(conversation_id)))
            await asyncio.sleep(0.15)  # a few events in
            first_at, followed = await timed_events(other.port, follow_request(conversation_id))
            _, mine = await own
            came = {number: at for number, at in mine}
            # Live: events the writing host got after the follower's first byte (those before came
            # to it as a catch-up, not live).
            return [at - came[n] for n, at in followed if n in came and came[n] > first_at]

        async def lags() -> list[float]:
            found = await asyncio.gather(*(follow_each(c) for c in conversations[:count]))
            return [lag for each in found for lag in each]

        async def reattach(conversation_id: str) -> tuple[list[float], list[float]]:
            own = asyncio.ensure_future(timed_events(writer.port, turn_request(conversation_id)))
            await asyncio.sleep(0.15)
            local, remote = [], []
            for _ in range(50):
                for port, times in ((writer.port, local), (other.port, remote)):
                    started = time.perf_counter()
                    times.append(await first_byte(port, follow_request(conversation_id)) - started)
            await own
            return local, remote

        live = asyncio.run(lags())
        local, remote = asyncio.run(reattach(conversations[count]))
    finally:
        writer.stop()
        other.stop()
        upstream.stop()
        redis_server.stop()
        folder.cleanup()
    return {
        "api": api,
        "turns": count,
        "events": len(live),
        "lag_p50_ms": p(live, 0.5),
        "lag_p99_ms": p(live, 0.99),
        "lag_max_ms": max(live) * 1000,
        "reattach_ttfb_same_worker_p50_ms": statistics.median(local) * 1000,
        "reattach_ttfb_other_host_p50_ms": statistics.median(remote) * 1000,
        "reattach_ttfb_other_host_p99_ms": p(remote, 0.99),
    }


def turn_request(conversation_id: str) -> bytes:
    return post_sse("/api/chat/stream", {"conversation_id": conversation_id, **TURN})


def post_sse(path: str, payload: dict[str, Any]) -> bytes:
    request = post(path, payload)
    head, _, body = request.partition(b"\r\n\r\n")
    return head + b"\r\nAccept: text/event-stream\r\n\r\n" + body


def follow_request(conversation_id: str) -> bytes:
    return (
        f"GET /api/conversations/{conversation_id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Accept: text/event-stream\r\nConnection: close\r\n\r\n"
    ).encode()


async def first_byte(port: int, request: bytes) -> float:
    """When the first byte of the answer's body came (the connection is then closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n", 1)[0], head
    await reader.readexactly(1)
    at = time.perf_counter()
    writer.close()
    return at


async def timed_events(port: int, request: bytes) -> tuple[float, list[tuple[int, float]]]:
    """When an SSE answer's first byte came, and each numbered event of it and when it came."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n", 1)[0], head
    found: list[tuple[int, float]] = []
    buffer = b""
    first_at = 0.0
    while True:
        data = await reader.read(65536)
        if not data:
            break
        now = time.perf_counter()
        first_at = first_at or now
        buffer += data
        for line in buffer.split(b"\n"):
            if line.startswith(b"id: "):
                found.append((int(line[4:]), now))
        buffer = buffer[buffer.rfind(b"\n") + 1 :]
        if b'"type":"done"' in data or b'"type":"error"' in data:
            break
    writer.close()
    return first_at, found
