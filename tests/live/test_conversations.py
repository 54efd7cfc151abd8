"""Stored conversations under the real server: many workers on one SQLite file, and restarts."""

from __future__ import annotations

import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from prometheus_client.mmap_dict import MmapedDict

from app.demo import compose

from .server import LiveServer


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
    events = [json.loads(frame[6:]) for frame in response.text.split("\n\n") if frame]
    assert events[-1]["type"] == "done", events[-1]
    return response.status_code, "".join(e["content"] for e in events if e["type"] == "token")


def chat_requests_per_worker(server: LiveServer) -> dict[str, float]:
    """How many chat requests each worker answered, read from its own metrics file."""
    counts = {}
    for path in Path(tempfile.gettempdir(), f"chat-metrics-{server.process.pid}").glob("counter_*.db"):
        counts[path.stem.split("_")[1]] = sum(
            value
            for key, value, *_ in MmapedDict.read_all_values_from_file(str(path))
            if json.loads(key)[1] == "chat_http_requests_total"
            and json.loads(key)[2]["route"] in ("/api/chat", "/api/chat/stream")
        )
    return counts


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
            assert (status, reply) == (200, " ".join(compose(message).split(" ")[:12])), route
            sent.append(message)
        return ids[index], sent

    with ThreadPoolExecutor(max_workers=conversations) as pool:
        return list(pool.map(converse, range(conversations)))


def assert_all_stored_complete(server: LiveServer, sent: list[tuple[str, list[str]]]) -> None:
    for conversation_id, messages in sent:
        found = stored(server, conversation_id)["messages"]
        expected = []
        for message in messages:
            reply = " ".join(compose(message).split(" ")[:12])
            expected += [("user", message, "complete"), ("assistant", reply, "complete")]
        assert [(m["role"], m["content"], m["status"]) for m in found] == expected


def test_workers_sharing_one_sqlite_file_store_every_turn() -> None:
    server = LiveServer({"WEB_CONCURRENCY": "3", "DEMO_DELAY_MS": "20", "LOG_FORMAT": "json"})
    try:
        sent = converse_concurrently(server, conversations=20, turns=3)
        assert_all_stored_complete(server, sent)
        per_worker = chat_requests_per_worker(server)
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
