"""Replies that outlive their connection, under the real server: several hosts (gunicorn masters on
their own ports) sharing Postgres and Redis, or one SQLite file; reattachments, stop from anywhere,
a killed worker, SIGTERM, a reader that stops reading, and the ``chat`` command."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ..support import FakeUpstream, LiveServer, Script, sse, wait_until
from ..support.conversations import last_message, new_conversation, upstream_settings

SSE = {"Accept": "text/event-stream"}
WORDS = [f"w{i} " for i in range(300)]


class Reader(threading.Thread):
    """A client reading a stream in the background: each event with its id and when it came."""

    def __init__(self, method: str, url: str, **options: Any) -> None:
        super().__init__(daemon=True)
        self.method, self.url, self.options = method, url, options
        self.status: int | None = None
        self.events: list[tuple[int | None, dict[str, Any], float]] = []
        self.closed = threading.Event()
        self.stop_after: int | None = options.pop("stop_after", None)  # events, then hang up
        self.start()

    def run(self) -> None:
        try:
            with requests.request(self.method, self.url, stream=True, timeout=30, **self.options) as response:
                self.status = response.status_code
                buffer = ""
                for chunk in response.iter_content(chunk_size=None):
                    buffer += chunk.decode()
                    complete, _, buffer = buffer.rpartition("\n\n")
                    now = time.monotonic()
                    self.events += [(n, data, now) for n, data in sse.numbered(complete)]
                    if self.stop_after is not None and len(self.events) >= self.stop_after:
                        return
        except requests.RequestException:
            pass
        finally:
            self.closed.set()

    def wait_for(self, count: int, timeout: float = 10) -> None:
        assert wait_until(lambda: len(self.events) >= count, timeout), (self.status, self.events[-3:])

    def ended(self, timeout: float = 15) -> dict[str, Any]:
        assert self.closed.wait(timeout), "the stream did not end"
        return self.events[-1][1]

    def tokens(self) -> list[tuple[int | None, str]]:
        return [(n, data["content"]) for n, data, _ in self.events if data["type"] == "token"]

    def text(self) -> str:
        return "".join(text for _, text in self.tokens())


def turn(server: LiveServer, conversation_id: str, **options: Any) -> Reader:
    body = {"conversation_id": conversation_id, "message": "Count for me"}
    return Reader("POST", f"{server.url}/api/chat/stream", json=body, headers=SSE, **options)


def follow(server: LiveServer, conversation_id: str, **headers: str) -> Reader:
    return Reader(
        "GET", f"{server.url}/api/conversations/{conversation_id}/stream", headers={**SSE, **headers}
    )


@pytest.fixture
def hosts(
    request: pytest.FixtureRequest, upstream: FakeUpstream, tmp_path: Path
) -> Iterator[list[LiveServer]]:
    """Two hosts: with ``redis`` two gunicorn masters sharing Postgres and Redis, with ``sqlite`` two
    sharing one SQLite file and nothing else."""
    if request.param == "redis":
        shared = {
            "DATABASE_URL": request.getfixturevalue("postgres_url"),
            "REDIS_URL": request.getfixturevalue("redis_url"),
        }
    else:
        shared = {"DATABASE_URL": f"sqlite:///{tmp_path}/chat.db"}
    servers = [LiveServer(upstream_settings(upstream, **shared))]
    servers.append(LiveServer(upstream_settings(upstream, **shared)))
    yield servers
    for server in servers:
        server.stop()


@pytest.mark.parametrize(("hosts", "behind_s"), [("redis", 0.05), ("sqlite", 1.5)], indirect=["hosts"])
def test_a_reply_started_on_one_host_is_followed_and_stopped_on_another(
    hosts: list[LiveServer], upstream: FakeUpstream, behind_s: float
) -> None:
    first, second = hosts
    upstream.script = Script(deltas=WORDS, delay=0.05)
    conversation_id = new_conversation(first)
    own = turn(first, conversation_id)
    own.wait_for(6)  # metadata and five words
    other = follow(second, conversation_id)
    other.wait_for(20)
    # Each event reaches the other host once, in order, and live: as it reaches the first, or at
    # most a checkpoint and a poll behind without Redis.
    numbers = [n for n, _ in other.tokens()]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    came = {n: at for n, _, at in own.events}
    lags = [at - came[n] for n, data, at in other.events[2:] if data["type"] == "token"]
    assert lags and max(lags) < behind_s + 0.5, lags  # what make bench measures, with room for CI
    stopping = time.monotonic()
    stopped = requests.post(f"{second.url}/api/conversations/{conversation_id}/stop", timeout=10)
    assert stopped.status_code == 200
    # The first host hung up on the model within a second of the stop.
    assert upstream.wait_until(lambda: upstream.open_streams() == 0, timeout=2)
    closed_at = upstream.streams[0].closed_at
    assert closed_at is not None and closed_at - stopping < 1.0
    for reader in (own, other):
        assert reader.ended() | {"usage": None} == {"type": "done", "usage": None, "status": "stopped"}
    assert own.events[-1][0] == other.events[-1][0]  # the same final event, numbered alike
    message = stopped.json()
    assert (message["status"], message["content"]) == ("stopped", own.text())
    assert message["content"] == own.text() == "".join(WORDS[: len(own.tokens())])
    assert other.text() == message["content"][-len(other.text()) :]  # a suffix: joined from where it came
    assert last_message(first, conversation_id) == message


@pytest.mark.parametrize("hosts", ["sqlite", "redis"], indirect=True)
def test_a_reader_reconnecting_every_three_events_gets_the_reply_exactly(
    hosts: list[LiveServer], upstream: FakeUpstream
) -> None:
    upstream.script = Script(deltas=WORDS[:120], delay=0.02)
    conversation_id = new_conversation(hosts[0])
    own = turn(hosts[0], conversation_id)
    own.wait_for(2)
    got: list[tuple[int | None, dict[str, Any], float]] = []
    last: int | None = None
    for attempt in range(200):
        headers = {} if last is None else {"Last-Event-ID": str(last)}
        reader = follow(hosts[attempt % 2], conversation_id, **headers)
        reader.stop_after = 4  # metadata and three events, then it hangs up
        reader.join(30)
        if reader.status == 204:
            break
        assert reader.status == 200 and reader.events[0][1]["type"] == "metadata"
        got += reader.events[1:]
        last = got[-1][0] if len(got) else last
        if got and got[-1][1]["type"] == "done":
            break
    usage = {"input_tokens": 9, "output_tokens": 120}
    assert got[-1][1] == {"type": "done", "usage": usage, "status": "complete"}
    numbers = [n for n, _, _ in got]
    assert numbers == sorted(set(numbers))  # each event once, in order
    text = "".join(data["content"] for _, data, _ in got if data["type"] == "token")
    assert text == "".join(WORDS[:120]) == last_message(hosts[1], conversation_id)["content"]
    own.ended()


def test_a_killed_workers_reply_is_interrupted_for_its_readers_on_another_host(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    shared = {"DATABASE_URL": f"sqlite:///{tmp_path}/chat.db"}
    first, second = (
        LiveServer(upstream_settings(upstream, **shared)),
        LiveServer(upstream_settings(upstream, **shared)),
    )
    try:
        upstream.script = Script(deltas=WORDS, delay=0.05)
        conversation_id = new_conversation(first)
        own = turn(first, conversation_id)
        own.wait_for(40)  # two seconds in: checkpointed
        other = follow(second, conversation_id)
        other.wait_for(2)
        os.kill(first.worker_pid(), signal.SIGKILL)
        end = other.ended()
        assert end == {
            "type": "error",
            "message": "The reply was interrupted: the server writing it stopped before the end.",
            "status": "interrupted",
        }
        message = last_message(second, conversation_id)
        assert message["status"] == "interrupted"
        # The text as checkpointed, at most a second (20 words) before the kill.
        assert own.text().startswith(message["content"])
        assert len(own.tokens()) - 22 <= len(message["content"].split()) <= len(own.tokens())
        assert other.text() == message["content"]  # from the start: it named no event
    finally:
        first.stop()
        second.stop()


def test_sigterm_lets_a_reply_end_in_the_graceful_timeout_else_stores_it_interrupted(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path}/chat.db"  # outlives the server
    server = LiveServer(upstream_settings(upstream, GRACEFUL_TIMEOUT_S="3", DATABASE_URL=database))
    try:
        short, long = new_conversation(server), new_conversation(server)
        upstream.script = Script(deltas=WORDS[:30], delay=0.05)  # 1.5 s: ends in time
        quick = turn(server, short, stop_after=3)  # its client leaves: the reply is the server's
        quick.join(10)
        upstream.script = Script(deltas=WORDS, delay=0.05)  # 15 s: does not
        slow = turn(server, long)
        slow.wait_for(5)
        stopping = time.monotonic()
        os.killpg(server.process.pid, signal.SIGTERM)
        assert server.process.wait(timeout=10) == 0
        assert 2 <= time.monotonic() - stopping < 4  # the graceful timeout, then a clean exit
        assert slow.ended() == {
            "type": "error",
            "message": "The reply was interrupted: the server writing it stopped before the end.",
            "status": "interrupted",
        }
        log = server.log_text()
        assert "Traceback" not in log and "[ERROR]" not in log
    finally:
        server.stop()
    restarted = LiveServer(upstream_settings(upstream, DATABASE_URL=database))
    try:
        assert (last_message(restarted, short)["status"], last_message(restarted, short)["content"]) == (
            "complete",
            "".join(WORDS[:30]),
        )
        interrupted = last_message(restarted, long)
        assert interrupted["status"] == "interrupted"
        assert interrupted["content"] == slow.text() and len(slow.tokens()) >= 5
    finally:
        restarted.stop()


def test_a_reader_that_stops_reading_holds_up_nothing_but_itself(upstream: FakeUpstream) -> None:
    server = LiveServer(upstream_settings(upstream, CLIENT_WRITE_TIMEOUT_S="1"))
    try:
        words = ["x" * 2000 + " "] * 20_000  # 40 MB: more than the kernel buffers for a reader
        upstream.script = Script(deltas=words, burst=True)
        conversation_id = new_conversation(server)
        with socket.socket() as stalled:
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, never read
            stalled.connect(("127.0.0.1", server.port))
            own = turn(server, conversation_id)
            own.wait_for(2)
            stalled.sendall(
                f"GET /api/conversations/{conversation_id}/stream HTTP/1.1\r\nHost: x\r\n"
                "Accept: text/event-stream\r\nX-Request-ID: stalled-reader\r\n\r\n".encode()
            )
            line = server.wait_for_access_line("stalled-reader", timeout=20)
            assert (line["outcome"], line.get("reason")) == ("disconnected", "client_stalled")
            assert own.ended(60)["status"] == "complete"
        assert len(own.text()) == len("".join(words))
        assert last_message(server, conversation_id)["status"] == "complete"
    finally:
        server.stop()
