"""Conversations kept in a real PostgreSQL: the routes, turns on both chat routes, 409, many writers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app import create_app
from app.store.models import Conversation, Message
from app.upstream.demo import compose

from ..conftest import Held
from ..support import sse

BUSY = "A reply in this conversation is still being written; wait for it to finish."


@pytest.fixture
def app(postgres_url: str) -> Iterator[Flask]:
    """The app on the demo model, its conversations in an empty Postgres database of its own."""
    app = create_app({"TESTING": True, "DEMO_DELAY_MS": "0", "DATABASE_URL": postgres_url})
    assert app.extensions["db"].kw["bind"].dialect.name == "postgresql"
    yield app
    app.extensions["db"].kw["bind"].dispose()


def new_conversation(client: FlaskClient, **fields: Any) -> str:
    response = client.post("/api/conversations", json=fields)
    assert response.status_code == 201, response.json
    return str(response.json["id"])  # type: ignore[index]


def stored(client: FlaskClient, conversation_id: str) -> dict[str, Any]:
    response = client.get(f"/api/conversations/{conversation_id}")
    assert response.status_code == 200, response.json
    return response.json  # type: ignore[return-value]


def words(*texts: str) -> int:
    """What the demo model reports as input tokens for a context of these turns."""
    return len(" ".join(texts).split())


def test_conversations_are_listed_newest_first_a_page_at_a_time(client: FlaskClient) -> None:
    made = [new_conversation(client, title=f"Trip {n}") for n in range(5)]
    pages, cursor = [], None
    while True:
        query = "limit=2" + (f"&before={cursor}" if cursor else "")
        page = client.get(f"/api/conversations?{query}").json
        pages.append([c["id"] for c in page["conversations"]])  # type: ignore[index]
        cursor = page["next"]  # type: ignore[index]
        if cursor is None:
            break
    assert pages == [made[4:2:-1], made[2:0:-1], made[:1]]
    # A turn makes its conversation the most recently active one.
    assert client.post("/api/chat", json={"conversation_id": made[1], "message": "hi"}).status_code == 200
    first = client.get("/api/conversations?limit=1").json["conversations"]  # type: ignore[index]
    assert [c["id"] for c in first] == [made[1]]


def test_turns_on_both_routes_are_stored_and_build_the_context(app: Flask, client: FlaskClient) -> None:
    conversation_id = new_conversation(client)
    asks = ["Tell me about lighthouses", "And about their keepers", "What about storms"]
    answered = client.post("/api/chat", json={"conversation_id": conversation_id, "message": asks[0]})
    assert answered.status_code == 200
    assert answered.json["reply"] == compose(asks[0])  # type: ignore[index]
    assert answered.json["conversation_id"] == conversation_id  # type: ignore[index]
    body = {"conversation_id": conversation_id, "message": asks[1]}
    with client.post("/api/chat/stream", json=body) as streamed:
        assert streamed.status_code == 200
        assert streamed.get_data(as_text=True) == compose(asks[1])
        assert streamed.headers["X-Conversation-ID"] == conversation_id
        second_id = streamed.headers["X-Message-ID"]
    body = {"conversation_id": conversation_id, "message": asks[2]}
    headers = {"Accept": "text/event-stream"}
    with client.post("/api/chat/stream", json=body, headers=headers) as events:
        frames = sse.events(events.get_data())
    assert frames[0]["conversation_id"] == conversation_id
    assert "".join(f["content"] for f in frames if f["type"] == "token") == compose(asks[2])

    conversation = stored(client, conversation_id)
    assert conversation["title"] == asks[0]
    messages = conversation["messages"]
    replies = [compose(ask) for ask in asks]
    assert [(m["role"], m["content"], m["status"]) for m in messages] == [
        turn
        for ask, reply in zip(asks, replies, strict=True)
        for turn in (("user", ask, "complete"), ("assistant", reply, "complete"))
    ]
    assert [m["id"] for m in messages[1::2]] == [
        answered.json["message_id"],  # type: ignore[index]
        second_id,
        frames[0]["message_id"],
    ]
    # Each turn's context was the stored history plus the new message (the demo model counts it).
    contexts = [asks[:1], [asks[0], replies[0], asks[1]], [asks[0], replies[0], asks[1], replies[1], asks[2]]]
    assert [m["usage"]["input_tokens"] for m in messages[1::2]] == [words(*c) for c in contexts]
    assert {m["model"] for m in messages[1::2]} == {app.config["OPENAI_MODEL"]}


def test_a_turn_while_a_reply_is_written_is_409(app: Flask, client: FlaskClient) -> None:
    conversation_id = new_conversation(client)
    body = {"conversation_id": conversation_id, "message": "Tell me a story about a robot"}
    held = app.extensions["llm"] = Held(app.extensions["llm"])
    with client.post("/api/chat/stream", json=body) as first:  # held after its first word: still written
        assert first.status_code == 200
        for path in ("/api/chat", "/api/chat/stream"):
            busy = client.post(path, json={"conversation_id": conversation_id, "message": "and then?"})
            assert (busy.status_code, busy.json) == (409, {"error": BUSY})
        held.go.set()
        assert first.get_data(as_text=True) == compose(body["message"])
    messages = stored(client, conversation_id)["messages"]
    assert [(m["role"], m["status"]) for m in messages] == [("user", "complete"), ("assistant", "complete")]
    again = client.post("/api/chat", json={"conversation_id": conversation_id, "message": "and then?"})
    assert again.status_code == 200
    assert len(stored(client, conversation_id)["messages"]) == 4


def test_a_reply_marked_as_being_written_makes_turns_409(app: Flask, client: FlaskClient) -> None:
    conversation_id = new_conversation(client)
    with app.extensions["db"].begin() as session:
        session.add(Message(conversation_id=conversation_id, role="assistant", status="streaming"))
    busy = client.post("/api/chat", json={"conversation_id": conversation_id, "message": "hello"})
    assert (busy.status_code, busy.json) == (409, {"error": BUSY})
    assert [m["status"] for m in stored(client, conversation_id)["messages"]] == ["streaming"]


def test_deleting_a_conversation_deletes_its_messages(app: Flask, client: FlaskClient) -> None:
    kept, gone = new_conversation(client), new_conversation(client)
    for conversation_id in (kept, gone):
        turn = {"conversation_id": conversation_id, "message": "Tell me about tides"}
        assert client.post("/api/chat", json=turn).status_code == 200
    assert client.delete(f"/api/conversations/{gone}").status_code == 204
    assert client.get(f"/api/conversations/{gone}").status_code == 404
    assert client.delete(f"/api/conversations/{gone}").status_code == 404
    listed = client.get("/api/conversations").json["conversations"]  # type: ignore[index]
    assert [c["id"] for c in listed] == [kept]
    with app.extensions["db"]() as session:
        per_conversation = select(Message.conversation_id, func.count()).group_by(Message.conversation_id)
        counts = {conversation_id: count for conversation_id, count in session.execute(per_conversation)}
        assert counts == {kept: 2}
        assert session.scalars(select(Conversation.id)).all() == [kept]


def test_twenty_turns_at_once_in_twenty_conversations_are_all_stored(app: Flask, client: FlaskClient) -> None:
    ids = [new_conversation(client) for _ in range(20)]
    start = threading.Barrier(20)

    def turn(index: int) -> tuple[int, str]:
        own = app.test_client()  # one client per thread
        body = {"conversation_id": ids[index], "message": f"Tell me about harbour number {index}"}
        start.wait(timeout=10)
        if index % 2:
            with own.post("/api/chat/stream", json=body) as response:
                return response.status_code, response.get_data(as_text=True)
        response = own.post("/api/chat", json=body)
        return response.status_code, response.json["reply"]  # type: ignore[index]

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(turn, range(20)))
    expected = [compose(f"Tell me about harbour number {index}") for index in range(20)]
    assert results == [(200, reply) for reply in expected]
    for conversation_id, reply in zip(ids, expected, strict=True):
        messages = stored(client, conversation_id)["messages"]
        assert [(m["role"], m["status"]) for m in messages] == [
            ("user", "complete"),
            ("assistant", "complete"),
        ]
        assert messages[1]["content"] == reply


def test_turns_started_together_in_one_conversation_let_exactly_one_through(postgres_url: str) -> None:
    app = create_app({"TESTING": True, "DEMO_DELAY_MS": "30", "DATABASE_URL": postgres_url})
    try:
        client = app.test_client()
        conversation_id = new_conversation(client)
        start = threading.Barrier(5)

        def turn(_: int) -> int:
            start.wait()
            body = {"conversation_id": conversation_id, "message": "Tell me about tides"}
            return app.test_client().post("/api/chat/stream", json=body, buffered=True).status_code

        for _ in range(3):
            with ThreadPoolExecutor(max_workers=5) as pool:
                statuses = sorted(pool.map(turn, range(5)))
            assert statuses == [200, 409, 409, 409, 409]
        replies = [m for m in stored(client, conversation_id)["messages"] if m["role"] == "assistant"]
        assert [m["status"] for m in replies] == ["complete"] * 3
    finally:
        app.extensions["db"].kw["bind"].dispose()


@pytest.mark.parametrize("conversation_id", ["%00", "a\x00b", "x" * 22 + "\x00", "1' OR '1'='1"])
def test_hostile_ids_and_nul_are_404_or_400_never_500(client: FlaskClient, conversation_id: str) -> None:
    real = new_conversation(client)
    assert client.get(f"/api/conversations/{conversation_id}").status_code == 404
    body = {"conversation_id": conversation_id, "message": "hi"}
    assert client.post("/api/chat", json=body).status_code == 404
    assert client.post("/api/conversations", json={"title": "a\x00b"}).status_code == 400
    body = {"conversation_id": real, "message": "my \x00 text"}
    assert client.post("/api/chat", json=body).status_code == 400
    assert stored(client, real)["messages"] == []
