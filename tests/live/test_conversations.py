"""Stored conversations under the real server: many workers on one SQLite file, restarts, a worker
killed mid-reply, clients that leave, upstream failures, Postgres, and the ``chat`` command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from app.upstream.demo import compose, pieces

from ..support import SECRET_KEY, FakeUpstream, LiveServer, Script, sse, wait_until


def new_conversation(server: LiveServer, **fields: Any) -> str:
    response = requests.post(f"{server.url}/api/conversations", json=fields, timeout=10)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def stored(server: LiveServer, conversation_id: str) -> dict[str, Any]:
    response = requests.get(f"{server.url}/api/conversations/{conversation_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def turn(server: LiveServer, conversation_id: str, message: str, route: str, **extra: Any) -> tuple[int, str]:
    """One turn on the JSON route ("json") or the stream route ("text" or "sse"): status and reply."""
    body = {"conversation_id": conversation_id, "message": message, **extra}
    if route == "json":
        response = requests.post(f"{server.url}/api/chat", json=body, timeout=30)
        return response.status_code, response.json().get("reply", response.text)
    headers = {"Accept": "text/event-stream"} if route == "sse" else {}
    response = requests.post(f"{server.url}/api/chat/stream", json=body, headers=headers, timeout=30)
    if route == "text" or response.status_code != 200:
        return response.status_code, response.text
    events = sse.events(response.text)
    assert events[-1]["type"] == "done", events[-1]
    return response.status_code, "".join(e["content"] for e in events if e["type"] == "token")


def errors_in(log: str) -> list[str]:
    """Log lines at ERROR or worse, tracebacks, and SQLite's 'database is locked'."""
    return [
        line
        for line in log.splitlines()
        if '"level": "ERROR"' in line
        or '"level": "CRITICAL"' in line
        or "Traceback" in line
        or "database is locked" in line
        or "[ERROR]" in line  # gunicorn's own
    ]


def converse_concurrently(server: LiveServer, conversations: int, turns: int) -> list[tuple[str, list[str]]]:
    """Each conversation's turns in sequence, the conversations at once; their ids and the messages sent.

    The routes take turns: JSON, plain text stream, SSE stream.
    """
    ids = [new_conversation(server) for _ in range(conversations)]

    def converse(index: int) -> tuple[str, list[str]]:
        sent = []
        for number in range(turns):
            message = f"Tell me about harbour {index} and its lighthouse number {number}"
            route = ("json", "text", "sse")[(index + number) % 3]
            status, reply = turn(server, ids[index], message, route, max_tokens=12)
            assert (status, reply) == (200, "".join(pieces(compose(message))[:12])), route
            sent.append(message)
        return ids[index], sent

    with ThreadPoolExecutor(max_workers=conversations) as pool:
        return list(pool.map(converse, range(conversations)))


def assert_all_stored_complete(server: LiveServer, sent: list[tuple[str, list[str]]]) -> None:
    for conversation_id, messages in sent:
        found = stored(server, conversation_id)["messages"]
        expected = []
        for message in messages:
            reply = "".join(pieces(compose(message))[:12])
            expected += [("user", message, "complete"), ("assistant", reply, "complete")]
        assert [(m["role"], m["content"], m["status"]) for m in found] == expected


def test_workers_sharing_one_sqlite_file_store_every_turn() -> None:
    server = LiveServer({"WEB_CONCURRENCY": "3", "DEMO_DELAY_MS": "20", "LOG_FORMAT": "json"})
    try:
        sent = converse_concurrently(server, conversations=20, turns=3)
        assert_all_stored_complete(server, sent)
        per_worker = server.chat_requests_per_worker()
        assert sum(per_worker.values()) == 60
        assert sum(1 for count in per_worker.values() if count) >= 2  # several workers wrote at once
        log = server.log_text()
        assert errors_in(log) == []
        turns_logged = [line for line in log.splitlines() if '"path": "/api/chat' in line]
        assert len(turns_logged) == 60 and all('"outcome": "complete"' in line for line in turns_logged)
    finally:
        server.stop()


def test_a_restart_keeps_every_conversation(tmp_path: Path) -> None:
    settings = {"DATABASE_URL": f"sqlite:///{tmp_path}/chat.db", "DEMO_DELAY_MS": "0"}
    first = LiveServer(settings)
    try:
        ids = [new_conversation(first, title=f"Trip {n}", instructions="Be brief.") for n in range(3)]
        for conversation_id in ids[:2]:
            for message in ("Tell me about tides", "And about the moon"):
                assert turn(first, conversation_id, message, "json")[0] == 200
        before = requests.get(f"{first.url}/api/conversations", timeout=10).json()
        kept = [stored(first, conversation_id) for conversation_id in ids]
    finally:
        first.stop()
    second = LiveServer(settings)
    try:
        assert requests.get(f"{second.url}/api/conversations", timeout=10).json() == before
        assert [stored(second, conversation_id) for conversation_id in ids] == kept
        assert [len(conversation["messages"]) for conversation in kept] == [4, 4, 0]
        # The history is there for the model too: the demo model counts the words it was shown.
        assert turn(second, ids[0], "What about storms", "json")[0] == 200
        history = [m["content"] for m in kept[0]["messages"]]
        reply = stored(second, ids[0])["messages"][-1]
        assert reply["usage"]["input_tokens"] == len(" ".join([*history, "What about storms"]).split())
    finally:
        second.stop()


def serving_worker(server: LiveServer) -> int:
    """The worker holding the one open client connection (found through its socket's inode)."""
    sockets = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        established = fields[3] == "01"
        if established and int(fields[1].split(":")[1], 16) == server.port:
            sockets.add(f"socket:[{fields[9]}]")
    assert len(sockets) == 1, sockets
    for pid in server.worker_pids():
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) in sockets:
                    return pid
            except FileNotFoundError:  # closed meanwhile
                continue
    raise AssertionError("no worker holds the connection")


def test_a_reply_whose_worker_was_killed_reads_interrupted_and_frees_the_conversation() -> None:
    # Two workers: the one that is not killed answers while the other is replaced.
    server = LiveServer(
        {"WEB_CONCURRENCY": "2", "DEMO_DELAY_MS": "200", "UPSTREAM_TIMEOUT_S": "1", "LOG_FORMAT": "json"}
    )
    try:
        conversation_id = new_conversation(server)
        ask = "Tell me a story about a robot"
        url = f"{server.url}/api/chat/stream"
        body = {"conversation_id": conversation_id, "message": ask}
        response = requests.post(url, json=body, stream=True, timeout=10)
        chunks = response.iter_content(chunk_size=None)
        # Longer than UPSTREAM_TIMEOUT_S: a reply that is still being written is never taken for dead.
        received = b""
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            received += next(chunks)
        assert stored(server, conversation_id)["messages"][-1]["status"] == "streaming"
        assert turn(server, conversation_id, "Are you there?", "json")[0] == 409
        os.kill(serving_worker(server), signal.SIGKILL)
        killed = time.monotonic()
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            list(chunks)

        def last_status() -> str:
            """The reply's status once it is no longer being written; "" until then."""
            status = str(stored(server, conversation_id)["messages"][-1]["status"])
            return "" if status == "streaming" else status

        # The worker is gone from this host: known as soon as the master has reaped it.
        assert wait_until(last_status, timeout=3, interval=0.05) == "interrupted"
        assert time.monotonic() - killed < 1
        status, reply = turn(server, conversation_id, "Are you there?", "json", max_tokens=3)
        assert (status, reply) == (200, "".join(pieces(compose("Are you there?"))[:3]))
        messages = stored(server, conversation_id)["messages"]
        assert [(m["role"], m["status"]) for m in messages] == [
            ("user", "complete"),
            ("assistant", "interrupted"),
            ("user", "complete"),
            ("assistant", "complete"),
        ]
        # Its text as checkpointed at most a second before the kill: words 200 ms apart.
        kept = messages[1]["content"]
        assert received.decode().startswith(kept)
        assert len(kept.split()) >= len(received.decode().split()) - 6 > 0
        # The model was shown both questions and the interrupted reply's text between them.
        assert messages[3]["usage"]["input_tokens"] == len(f"{ask} {kept} Are you there?".split())
    finally:
        server.stop()


def reply_of(server: LiveServer, conversation_id: str, timeout: float = 5) -> dict[str, Any]:
    """The conversation's last message once it is no longer being written."""

    def finished() -> dict[str, Any] | None:
        message: dict[str, Any] = stored(server, conversation_id)["messages"][-1]
        return None if message["status"] == "streaming" else message

    reply = wait_until(finished, timeout, interval=0.05)
    assert reply, f"the reply was still being written after {timeout} s"
    return reply


def received_text(chunks: Iterator[bytes], as_sse: bool, deltas: int) -> str:
    """Read the stream until ``deltas`` pieces of the reply have arrived; their text."""
    data = b""
    while True:
        data += next(chunks)
        if not as_sse and len(data.decode().split()) >= deltas:
            return data.decode()
        events = sse.events(data.decode().rpartition("\n\n")[0])
        tokens = [event["content"] for event in events if event["type"] == "token"]
        if as_sse and len(tokens) >= deltas:
            return "".join(tokens)


@pytest.fixture(scope="module")
def stopping_server(upstream_server: FakeUpstream) -> Iterator[LiveServer]:
    """The real server in front of the fake upstream, where a turn's client leaving stops its reply."""
    server = LiveServer(
        {
            "OPENAI_API_KEY": SECRET_KEY,
            "OPENAI_BASE_URL": upstream_server.base_url,
            "UPSTREAM_TIMEOUT_S": "2",
            "LOG_FORMAT": "json",
            "REPLY_ON_DISCONNECT": "stop",
        }
    )
    yield server
    server.stop()


def leave_mid_reply(server: LiveServer, upstream: FakeUpstream, as_sse: bool) -> tuple[str, str, str, float]:
    """Start a 400-delta turn, read three deltas and hang up; the conversation, the request id,
    the text received, and when the client hung up."""
    upstream.script = Script(deltas=[f"w{i} " for i in range(400)], delay=0.02)
    conversation_id = new_conversation(server)
    body = {"conversation_id": conversation_id, "message": "Count for me"}
    headers = {"Accept": "text/event-stream"} if as_sse else {}
    response = requests.post(
        f"{server.url}/api/chat/stream", json=body, headers=headers, stream=True, timeout=10
    )
    request_id = response.headers["X-Request-ID"]
    received = received_text(response.iter_content(chunk_size=None), as_sse, deltas=3)
    response.close()
    return conversation_id, request_id, received, time.monotonic()


@pytest.mark.parametrize("as_sse", [False, True], ids=["text", "sse"])
def test_a_client_leaving_mid_reply_leaves_it_to_be_written_and_stored_whole(
    openai_server: LiveServer, upstream: FakeUpstream, as_sse: bool
) -> None:
    conversation_id, request_id, received, _ = leave_mid_reply(openai_server, upstream, as_sse)
    assert openai_server.wait_for_access_line(request_id)["outcome"] == "disconnected"
    assert stored(openai_server, conversation_id)["messages"][-1]["status"] == "streaming"
    reply = reply_of(openai_server, conversation_id, timeout=15)
    whole = "".join(f"w{i} " for i in range(400))
    assert (reply["status"], reply["content"]) == ("complete", whole)
    assert whole.startswith(received)
    [stream] = upstream.streams
    assert (stream.ended_by, stream.deltas_sent) == ("complete", 400)


@pytest.mark.parametrize("as_sse", [False, True], ids=["text", "sse"])
def test_a_client_leaving_mid_reply_stops_it_when_replies_stop_with_their_client(
    stopping_server: LiveServer, upstream: FakeUpstream, as_sse: bool
) -> None:
    conversation_id, request_id, received, hung_up = leave_mid_reply(stopping_server, upstream, as_sse)
    deltas = [f"w{i} " for i in range(400)]
    assert upstream.wait_until(lambda: upstream.open_streams() == 0, timeout=2.0)
    closed_at = upstream.streams[0].closed_at
    assert closed_at is not None and closed_at - hung_up < 1.0
    assert stopping_server.wait_for_access_line(request_id)["outcome"] == "disconnected"
    reply = reply_of(stopping_server, conversation_id)
    assert reply["status"] == "stopped"
    sent = upstream.streams[0].deltas_sent
    assert received in {"".join(deltas[:n]) for n in range(3, sent + 1)}
    # What the client got, and at most what the upstream sent before it was closed.
    assert reply["content"] in {"".join(deltas[:n]) for n in range(len(received.split()), sent + 1)}
    messages = stored(stopping_server, conversation_id)["messages"]
    assert [(m["role"], m["content"]) for m in messages[:1]] == [("user", "Count for me")]


@pytest.mark.parametrize("path", ["/api/chat", "/api/chat/stream"])
def test_a_failure_before_the_first_delta_stores_an_empty_error(
    openai_server: LiveServer, upstream: FakeUpstream, path: str
) -> None:
    upstream.script = Script(status=500)
    conversation_id = new_conversation(openai_server)
    body = {"conversation_id": conversation_id, "message": "Tell me about tides"}
    response = requests.post(f"{openai_server.url}{path}", json=body, timeout=10)
    assert response.status_code == 502
    assert response.headers["X-Conversation-ID"] == conversation_id
    messages = stored(openai_server, conversation_id)["messages"]
    assert [(m["role"], m["content"], m["status"]) for m in messages] == [
        ("user", "Tell me about tides", "complete"),
        ("assistant", "", "error"),
    ]
    assert messages[1]["id"] == response.headers["X-Message-ID"]


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/api/chat", 502, "The connection to the model broke."),
        ("/api/chat/stream", 200, "Hello,\n[error: The connection to the model broke.]"),
    ],
    ids=["json", "stream"],
)
def test_a_failure_mid_reply_stores_the_partial_text_as_an_error(
    openai_server: LiveServer, upstream: FakeUpstream, path: str, status: int, body: str
) -> None:
    upstream.script = Script(cut_after=2)
    conversation_id = new_conversation(openai_server)
    ask = {"conversation_id": conversation_id, "message": "Tell me about tides"}
    response = requests.post(f"{openai_server.url}{path}", json=ask, timeout=10)
    said = response.json()["error"] if path == "/api/chat" else response.text
    assert (response.status_code, said) == (status, body)
    messages = stored(openai_server, conversation_id)["messages"]
    assert [(m["role"], m["content"], m["status"]) for m in messages] == [
        ("user", "Tell me about tides", "complete"),
        ("assistant", "Hello,", "error"),
    ]


def test_two_workers_on_postgres_store_every_turn(postgres_url: str) -> None:
    server = LiveServer(
        {"WEB_CONCURRENCY": "2", "DEMO_DELAY_MS": "20", "DATABASE_URL": postgres_url, "LOG_FORMAT": "json"}
    )
    try:
        sent = converse_concurrently(server, conversations=10, turns=2)
        assert_all_stored_complete(server, sent)
        per_worker = server.chat_requests_per_worker()
        assert sum(per_worker.values()) == 20
        assert all(per_worker.values()) and len(per_worker) == 2  # both workers wrote
        assert errors_in(server.log_text()) == []
    finally:
        server.stop()


@pytest.fixture(scope="module")
def quick_demo_server() -> Iterator[LiveServer]:
    server = LiveServer({"DEMO_DELAY_MS": "0"})
    yield server
    server.stop()


def test_the_chat_command_starts_and_continues_a_conversation(quick_demo_server: LiveServer) -> None:
    chat = Path(sys.executable).parent / "chat"
    env = {k: v for k, v in os.environ.items() if k != "CHAT_API_KEY"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(chat), "--url", quick_demo_server.url, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, env=env)

    started = run("--new", "Tell me about owls")
    assert (started.returncode, started.stdout) == (0, compose("Tell me about owls") + "\n")
    assert started.stderr.startswith("conversation: ") and started.stderr.count("\n") == 1
    conversation_id = started.stderr.removeprefix("conversation: ").strip()
    continued = run("--conversation", conversation_id, "And their nests")
    assert (continued.returncode, continued.stdout, continued.stderr) == (
        0,
        compose("And their nests") + "\n",
        "",
    )
    messages = stored(quick_demo_server, conversation_id)["messages"]
    assert [(m["role"], m["content"], m["status"]) for m in messages] == [
        ("user", "Tell me about owls", "complete"),
        ("assistant", compose("Tell me about owls"), "complete"),
        ("user", "And their nests", "complete"),
        ("assistant", compose("And their nests"), "complete"),
    ]
