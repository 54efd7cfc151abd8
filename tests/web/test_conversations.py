"""Conversations kept on the server: the routes, and turns stored around the model's reply."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from app.replies import store, worker
from app.store import turns
from app.store.models import Conversation, Message, utcnow

from ..conftest import FakeLLM
from ..fake_upstream import FakeUpstream, Script
from ..support import sse, wait_until

SSE = {"Accept": "text/event-stream"}
FRAMINGS = {
    "text": ("/api/chat/stream", {}),
    "sse": ("/api/chat/stream", SSE),
    "json": ("/api/chat", {}),
}


def sessions(app: Flask) -> sessionmaker[Session]:
    return app.extensions["db"]  # type: ignore[no-any-return]


def engine(app: Flask) -> Engine:
    return sessions(app).kw["bind"]  # type: ignore[no-any-return]


def new_conversation(client: FlaskClient, **fields: Any) -> str:
    response = client.post("/api/conversations", json=fields)
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["id"])


def messages(client: FlaskClient, conversation_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/conversations/{conversation_id}")
    assert response.status_code == 200
    return response.get_json()["messages"]  # type: ignore[no-any-return]


def reply_of(framing: str, body: bytes) -> str:
    if framing == "json":
        return str(json.loads(body)["reply"])
    if framing == "sse":
        return sse.reply(body)
    return body.decode()


@pytest.fixture
def statements(app: Flask) -> Iterator[list[str]]:
    """Every SQL statement the app sends while the test runs."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    event.listen(engine(app), "before_cursor_execute", record)
    yield sent
    event.remove(engine(app), "before_cursor_execute", record)


# --- The routes ------------------------------------------------------------------------------


def test_creating_a_conversation_answers_201_with_its_location(client: FlaskClient) -> None:
    response = client.post(
        "/api/conversations", json={"title": "  Trip\n plans ", "instructions": "Be brief."}
    )
    assert response.status_code == 201
    body = response.get_json()
    assert response.headers["Location"] == f"/api/conversations/{body['id']}"
    assert body["title"] == "Trip plans"  # one line
    assert body["instructions"] == "Be brief."
    assert body["model"] is None
    assert body["created_at"] == body["updated_at"]
    assert body["created_at"].endswith("Z")
    assert len(body["id"]) >= 22  # 128 random bits, not a counter
    assert new_conversation(client) != body["id"]


@pytest.mark.parametrize(
    ("body", "sentence"),
    [
        ({"title": 5}, "'title' must be a string."),
        ({"title": "x" * 201}, "'title' is 201 characters long; the limit is 200."),
        ({"instructions": ["x"]}, "'instructions' must be a string."),
        ({"model": "gpt-5-secret"}, "'model' must be one of: gpt-4o-mini."),
        ([], "The request body must be a JSON object."),
        ({"title": "\ud800"}, "'title' contains invalid Unicode (a lone surrogate)."),
    ],
)
def test_bad_conversation_bodies_get_400_naming_the_field(
    client: FlaskClient, body: Any, sentence: str
) -> None:
    conversation_id = new_conversation(client)
    for method, path in (("post", "/api/conversations"), ("patch", f"/api/conversations/{conversation_id}")):
        response = getattr(client, method)(path, json=body)
        assert (response.status_code, response.get_json()) == (400, {"error": sentence})
    assert client.get("/api/conversations").get_json()["conversations"][0]["title"] is None


def test_a_conversation_body_must_be_json(client: FlaskClient) -> None:
    response = client.post(
        "/api/conversations", data="title=x", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 400
    assert "Content-Type: application/json" in response.get_json()["error"]


def test_the_list_is_most_recently_active_first_in_pages(client: FlaskClient) -> None:
    ids = [new_conversation(client, title=f"c{n}") for n in range(5)]
    client.post("/api/chat", json={"conversation_id": ids[1], "message": "wake up"})  # now the most active
    expected = [ids[1], ids[4], ids[3], ids[2], ids[0]]
    seen, cursor, pages = [], None, 0
    while True:
        query = "?limit=2" + (f"&before={cursor}" if cursor else "")
        page = client.get(f"/api/conversations{query}").get_json()
        assert "messages" not in page["conversations"][0]
        seen += [c["id"] for c in page["conversations"]]
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
    assert (seen, pages) == (expected, 3)
    assert [c["id"] for c in client.get("/api/conversations").get_json()["conversations"]] == expected


@pytest.mark.parametrize(
    ("query", "sentence"),
    [
        ("limit=0", "'limit' must be a whole number from 1 to 100."),
        ("limit=101", "'limit' must be a whole number from 1 to 100."),
        ("limit=ten", "'limit' must be a whole number from 1 to 100."),
        ("limit=%D9%A3", "'limit' must be a whole number from 1 to 100."),  # an Arabic-Indic three
        ("before=", "'before' must be the 'next' value of an earlier page."),
        ("before=yesterday", "'before' must be the 'next' value of an earlier page."),
        ("before=1.a'%20OR%201=1--", "'before' must be the 'next' value of an earlier page."),
    ],
)
def test_bad_list_parameters_get_400(client: FlaskClient, query: str, sentence: str) -> None:
    response = client.get(f"/api/conversations?{query}")
    assert (response.status_code, response.get_json()) == (400, {"error": sentence})


def test_a_cursor_far_in_the_future_lists_everything(client: FlaskClient) -> None:
    conversation_id = new_conversation(client)
    page = client.get(f"/api/conversations?before={'9' * 19}.zzzz").get_json()
    assert [c["id"] for c in page["conversations"]] == [conversation_id]


def test_renaming_and_clearing_fields(client: FlaskClient) -> None:
    conversation_id = new_conversation(client, title="Old", instructions="Be brief.")
    before = client.get(f"/api/conversations/{conversation_id}").get_json()
    response = client.patch(
        f"/api/conversations/{conversation_id}", json={"title": "New", "instructions": None}
    )
    assert response.status_code == 200
    after = response.get_json()
    assert (after["title"], after["instructions"], after["model"]) == ("New", None, None)
    assert after["updated_at"] >= before["updated_at"]
    assert client.get(f"/api/conversations/{conversation_id}").get_json()["title"] == "New"


def test_deleting_a_conversation_takes_its_messages(app: Flask, client: FlaskClient) -> None:
    conversation_id = new_conversation(client)
    client.post("/api/chat", json={"conversation_id": conversation_id, "message": "hello there"})
    assert client.delete(f"/api/conversations/{conversation_id}").status_code == 204
    assert client.get(f"/api/conversations/{conversation_id}").status_code == 404
    assert client.delete(f"/api/conversations/{conversation_id}").status_code == 404
    with sessions(app)() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 0


def test_a_new_row_is_updated_when_it_was_created(app: Flask) -> None:
    """One reading of the clock per row: two readings a tick apart would tell them apart."""
    moment = utcnow() - timedelta(days=1)  # unlike any later reading of the clock
    with sessions(app).begin() as session:
        conversation = Conversation(created_at=moment)
        session.add(conversation)
        session.flush()
        reply = Message(
            conversation_id=conversation.id, role="assistant", status="streaming", created_at=moment
        )
        session.add(reply)
        session.flush()
        assert (conversation.updated_at, reply.updated_at) == (moment, moment)


HOSTILE_IDS = [
    "x" * 10_000,
    "🤖" * 30,
    "..%2F..%2Fetc%2Fpasswd",
    "1' OR '1'='1",
    "1; DROP TABLE conversations; --",
    "%00",
    "\u202e",
]


@pytest.mark.parametrize("conversation_id", HOSTILE_IDS)
def test_hostile_ids_are_404_on_every_route(client: FlaskClient, conversation_id: str) -> None:
    new_conversation(client)
    path = f"/api/conversations/{conversation_id}"
    for response in (client.get(path), client.patch(path, json={"title": "x"}), client.delete(path)):
        assert response.status_code == 404
        # A path-like id that no longer names a conversation's address is no route at all.
        assert response.get_json()["error"] in (
            "There is no conversation with that id.",
            "There is nothing at this address.",
        )
    assert len(client.get("/api/conversations").get_json()["conversations"]) == 1  # still there


@pytest.mark.parametrize("conversation_id", HOSTILE_IDS)
@pytest.mark.parametrize("route", ["/api/chat", "/api/chat/stream"])
def test_hostile_ids_in_a_turn_are_404_and_nothing_goes_upstream(
    client: FlaskClient, fake_llm: FakeLLM, conversation_id: str, route: str
) -> None:
    response = client.post(route, json={"conversation_id": conversation_id, "message": "hi"})
    assert (response.status_code, response.get_json()) == (
        404,
        {"error": "There is no conversation with that id."},
    )
    assert fake_llm.calls == []


@pytest.mark.parametrize(
    ("body", "sentence"),
    [
        (
            {"conversation_id": 7, "message": "hi"},
            "'conversation_id' must be a string: the id of a stored conversation.",
        ),
        ({"conversation_id": "CID"}, "Give a 'message' (a non-blank string) to add to the conversation."),
        (
            {"conversation_id": "CID", "message": "hi", "messages": [{"role": "user", "content": "x"}]},
            "Leave out 'messages' when giving 'conversation_id': the server keeps the history.",
        ),
        ({"conversation_id": "CID", "message": "   "}, "'message' must not be blank."),
        (
            {"conversation_id": "CID", "message": "hi", "model": "nope"},
            "'model' must be one of: gpt-4o-mini.",
        ),
    ],
)
def test_bad_turns_get_400_and_store_nothing(
    app: Flask, client: FlaskClient, fake_llm: FakeLLM, body: dict[str, Any], sentence: str
) -> None:
    conversation_id = new_conversation(client)
    if body.get("conversation_id") == "CID":
        body = {**body, "conversation_id": conversation_id}
    for route in ("/api/chat", "/api/chat/stream"):
        response = client.post(route, json=body)
        assert (response.status_code, response.get_json()) == (400, {"error": sentence})
    assert fake_llm.calls == []
    assert messages(client, conversation_id) == []


# --- Ownership -------------------------------------------------------------------------------

KEYS = {"alice": "alice-key-0123456789", "bob": "bob-key-9876543210"}


def as_(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[who]}"}


def test_a_conversation_belongs_to_the_key_that_created_it() -> None:
    app = create_app({"TESTING": True, "DEMO_DELAY_MS": "0", "API_KEYS": ",".join(KEYS.values())})
    client = app.test_client()
    created = client.post("/api/conversations", json={"title": "mine"}, headers=as_("alice"))
    conversation_id = created.get_json()["id"]
    path = f"/api/conversations/{conversation_id}"
    assert client.get(path, headers=as_("alice")).status_code == 200
    for response in (
        client.get(path, headers=as_("bob")),
        client.patch(path, json={"title": "theirs"}, headers=as_("bob")),
        client.delete(path, headers=as_("bob")),
        client.post(
            "/api/chat", json={"conversation_id": conversation_id, "message": "hi"}, headers=as_("bob")
        ),
        client.post(
            "/api/chat/stream", json={"conversation_id": conversation_id, "message": "hi"}, headers=as_("bob")
        ),
    ):
        assert response.status_code == 404
    assert client.get("/api/conversations", headers=as_("bob")).get_json()["conversations"] == []
    assert client.get(path, headers=as_("alice")).get_json()["title"] == "mine"
    assert client.get(path).status_code == 401
    with sessions(app)() as session:
        owner = session.scalars(select(Conversation.owner)).one()
    key = KEYS["alice"]
    assert owner and key not in owner and hashlib.sha256(key.encode()).hexdigest()[: len(owner)] != owner


# --- Turns -----------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_a_turn_sends_the_stored_context_and_stores_the_reply(
    make_openai_app: Callable[..., Flask], upstream: FakeUpstream, api: str, framing: str
) -> None:
    app = make_openai_app(OPENAI_API=api, ALLOWED_MODELS="gpt-4o")
    client = app.test_client()
    conversation_id = new_conversation(client, instructions="Answer in French.", model="gpt-4o")
    route, headers = FRAMINGS[framing]
    upstream.script = Script(deltas=["Bon", "jour"])
    first = client.post(
        route,
        json={"conversation_id": conversation_id, "message": "Say hello"},
        headers=headers,
        buffered=True,
    )
    upstream.script = Script(deltas=["Au ", "revoir"])
    second = client.post(
        route,
        json={"conversation_id": conversation_id, "message": "Now goodbye"},
        headers=headers,
        buffered=True,
    )
    assert (first.status_code, second.status_code) == (200, 200)
    assert reply_of(framing, second.get_data()) == "Au revoir"

    sent = upstream.requests[-1].body
    turns = [
        {"role": "user", "content": "Say hello"},
        {"role": "assistant", "content": "Bonjour"},
        {"role": "user", "content": "Now goodbye"},
    ]
    assert sent["model"] == "gpt-4o"  # the conversation's model
    if api == "chat":
        assert sent["messages"] == [{"role": "system", "content": "Answer in French."}, *turns]
    else:
        assert (sent["instructions"], sent["input"]) == ("Answer in French.", turns)

    stored = messages(client, conversation_id)
    assert [(m["role"], m["content"], m["status"]) for m in stored] == [
        ("user", "Say hello", "complete"),
        ("assistant", "Bonjour", "complete"),
        ("user", "Now goodbye", "complete"),
        ("assistant", "Au revoir", "complete"),
    ]
    reply = stored[-1]
    assert reply["model"] == "gpt-4o"
    assert reply["usage"] == {"input_tokens": 9, "output_tokens": 2}
    if framing == "json":
        body = second.get_json()
        assert (body["conversation_id"], body["message_id"]) == (conversation_id, reply["id"])
    else:
        assert second.headers["X-Conversation-ID"] == conversation_id
        assert second.headers["X-Message-ID"] == reply["id"]
    if framing == "sse":
        metadata = sse.events(second.get_data())[0]
        assert metadata == {
            "type": "metadata",
            "request_id": second.headers["X-Request-ID"],
            "model": "gpt-4o",
            "conversation_id": conversation_id,
            "message_id": reply["id"],
        }


def test_a_turns_own_instructions_and_model_win(client: FlaskClient, fake_llm: FakeLLM) -> None:
    app = create_app({"TESTING": True, "DEMO_DELAY_MS": "0", "ALLOWED_MODELS": "gpt-4o"})
    client = app.test_client()
    app.extensions["llm"] = fake_llm
    conversation_id = new_conversation(client, instructions="Be brief.", model="gpt-4o")
    body = {
        "conversation_id": conversation_id,
        "message": "hi",
        "instructions": "Be long.",
        "model": "gpt-4o-mini",
    }
    assert client.post("/api/chat", json=body).status_code == 200
    assert (fake_llm.calls[-1].instructions, fake_llm.calls[-1].model) == ("Be long.", "gpt-4o-mini")


def test_a_model_no_longer_allowed_falls_back_to_the_default(database: str, fake_llm: FakeLLM) -> None:
    old = create_app({"TESTING": True, "ALLOWED_MODELS": "gpt-4o"}).test_client()
    conversation_id = new_conversation(old, model="gpt-4o")
    app = create_app({"TESTING": True})
    app.extensions["llm"] = fake_llm
    assert (
        app.test_client()
        .post("/api/chat", json={"conversation_id": conversation_id, "message": "hi"})
        .status_code
        == 200
    )
    assert fake_llm.calls[-1].model == "gpt-4o-mini"


def test_the_context_holds_the_newest_200_turns_with_text(
    app: Flask, client: FlaskClient, fake_llm: FakeLLM
) -> None:
    conversation_id = new_conversation(client)
    with sessions(app).begin() as session:
        for n in range(150):
            session.add(
                Message(conversation_id=conversation_id, role="user", content=f"q{n}", status="complete")
            )
            text = "" if n % 50 == 0 else f"a{n}"  # a reply that failed before any text
            session.add(
                Message(conversation_id=conversation_id, role="assistant", content=text, status="error")
            )
    assert (
        client.post("/api/chat", json={"conversation_id": conversation_id, "message": "last"}).status_code
        == 200
    )
    sent = fake_llm.calls[-1].messages
    assert len(sent) == 201
    assert sent[-1] == {"role": "user", "content": "last"}
    assert all(turn["content"] for turn in sent)
    assert sent[-2] == {"role": "assistant", "content": "a149"}
    assert sent[0]["content"] == "q49"  # the oldest turns beyond 200 are left out
    assert {"role": "assistant", "content": ""} not in sent


def test_an_untitled_conversation_takes_the_first_messages_opening_words(client: FlaskClient) -> None:
    conversation_id = new_conversation(client)
    message = "Plan   a three-day trip to Lisbon with museums, food markets and a day by the sea please"
    client.post("/api/chat", json={"conversation_id": conversation_id, "message": message})
    client.post("/api/chat", json={"conversation_id": conversation_id, "message": "Another question"})
    title = client.get(f"/api/conversations/{conversation_id}").get_json()["title"]
    assert title == "Plan a three-day trip to Lisbon with museums, food markets"
    assert len(title) <= 60
    long_word = new_conversation(client)
    client.post("/api/chat", json={"conversation_id": long_word, "message": "x" * 80})
    assert client.get(f"/api/conversations/{long_word}").get_json()["title"] == "x" * 60
    named = new_conversation(client, title="Mine")
    client.post("/api/chat", json={"conversation_id": named, "message": "hello"})
    assert client.get(f"/api/conversations/{named}").get_json()["title"] == "Mine"


@pytest.mark.parametrize("framing", list(FRAMINGS))
@pytest.mark.parametrize(("fail_after", "kept"), [(0, ""), (2, "Hi there")])
def test_a_failed_reply_is_stored_as_error_with_its_text(
    client: FlaskClient, fake_llm: FakeLLM, framing: str, fail_after: int, kept: str
) -> None:
    fake_llm.deltas = ["Hi", " there", " friend"]
    fake_llm.fail_after = fail_after
    conversation_id = new_conversation(client)
    route, headers = FRAMINGS[framing]
    response = client.post(
        route, json={"conversation_id": conversation_id, "message": "hello"}, headers=headers, buffered=True
    )
    assert response.status_code == (502 if fail_after == 0 or framing == "json" else 200)
    user, reply = messages(client, conversation_id)
    assert (user["content"], user["status"]) == ("hello", "complete")  # stored before the model was called
    assert (reply["content"], reply["status"], reply["usage"]) == (kept, "error", None)
    assert response.headers["X-Message-ID"] == reply["id"]


@pytest.mark.parametrize("accept", [{}, SSE])
def test_a_client_that_leaves_gets_its_reply_stored_as_stopped_when_replies_stop_with_it(
    make_openai_app: Callable[..., Flask], upstream: FakeUpstream, api: str, accept: dict[str, str]
) -> None:
    client = make_openai_app(OPENAI_API=api, REPLY_ON_DISCONNECT="stop").test_client()
    conversation_id = new_conversation(client)
    upstream.script = Script(deltas=["One ", "two ", "three"], stall_after=2)
    body = {"conversation_id": conversation_id, "message": "count"}
    response = client.post("/api/chat/stream", json=body, headers=accept, buffered=False)
    chunks = iter(response.response)
    received = ""
    while received != "One two ":
        received += reply_of("sse" if accept else "text", next(chunks))
    response.close()  # the client hung up while the model was silent
    assert upstream.wait_until(lambda: upstream.open_streams() == 0, timeout=1.0)
    assert wait_until(lambda: messages(client, conversation_id)[-1]["status"] == "stopped")
    reply = messages(client, conversation_id)[-1]
    assert (reply["content"], reply["status"]) == ("One two ", "stopped")


@pytest.mark.parametrize("accept", [{}, SSE])
def test_a_client_that_leaves_does_not_stop_its_reply(
    make_openai_app: Callable[..., Flask], upstream: FakeUpstream, api: str, accept: dict[str, str]
) -> None:
    client = make_openai_app(OPENAI_API=api).test_client()
    conversation_id = new_conversation(client)
    upstream.script = Script(deltas=["One ", "two ", "three ", "four"], delay=0.1)
    body = {"conversation_id": conversation_id, "message": "count"}
    response = client.post("/api/chat/stream", json=body, headers=accept, buffered=False)
    chunks = iter(response.response)
    received = ""
    while received != "One ":
        received += reply_of("sse" if accept else "text", next(chunks))
    response.close()  # the client hung up: the reply is the server's, and goes on
    assert messages(client, conversation_id)[-1]["status"] == "streaming"
    assert wait_until(lambda: messages(client, conversation_id)[-1]["status"] == "complete", timeout=5)
    assert messages(client, conversation_id)[-1]["content"] == "One two three four"
    [stream] = upstream.streams
    assert upstream.wait_until(lambda: stream.ended_by == "complete")  # read to its end, not hung up on


def test_a_second_turn_while_a_reply_is_written_gets_409(client: FlaskClient, fake_llm: FakeLLM) -> None:
    conversation_id = new_conversation(client)
    fake_llm.hold = threading.Event()
    first = client.post(
        "/api/chat/stream", json={"conversation_id": conversation_id, "message": "one"}, buffered=False
    )
    assert messages(client, conversation_id)[-1]["status"] == "streaming"
    for route in ("/api/chat", "/api/chat/stream"):
        second = client.post(route, json={"conversation_id": conversation_id, "message": "two"})
        assert second.status_code == 409
        assert second.get_json() == {
            "error": "A reply in this conversation is still being written; wait for it to finish."
        }
    assert len(fake_llm.calls) == 1
    fake_llm.hold.set()
    assert b"".join(first.response) == b"Hi there"
    first.close()
    assert (
        client.post("/api/chat", json={"conversation_id": conversation_id, "message": "two"}).status_code
        == 200
    )
    assert [m["status"] for m in messages(client, conversation_id)] == ["complete"] * 4


def test_a_reply_whose_worker_died_reads_as_interrupted_and_frees_the_conversation(
    app: Flask, client: FlaskClient
) -> None:
    conversation_id = new_conversation(client)
    timeout = timedelta(seconds=app.config["UPSTREAM_TIMEOUT_S"])
    with sessions(app).begin() as session:
        session.add(Message(conversation_id=conversation_id, role="user", content="q", status="complete"))
        session.add(
            Message(
                conversation_id=conversation_id,
                role="assistant",
                status="streaming",
                updated_at=utcnow() - timeout - timedelta(seconds=1),  # no heartbeat for too long
            )
        )
    assert [m["status"] for m in messages(client, conversation_id)] == ["complete", "interrupted"]
    assert (
        client.post("/api/chat", json={"conversation_id": conversation_id, "message": "again"}).status_code
        == 200
    )
    assert [m["status"] for m in messages(client, conversation_id)] == [
        "complete",
        "interrupted",
        "complete",
        "complete",
    ]


def test_a_long_reply_keeps_beating_and_is_never_taken_for_dead(
    make_openai_app: Callable[..., Flask], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reply silent in the database for 0.3 s counts as dead: it checkpoints every 0.05 s.
    monkeypatch.setattr(worker, "CHECKPOINT_S", 0.05)
    monkeypatch.setattr(worker, "MIN_STALE_S", 0.3)
    app = make_openai_app(UPSTREAM_TIMEOUT_S="0.3")
    client = app.test_client()
    conversation_id = new_conversation(client)
    upstream.script = Script(deltas=[f"w{n} " for n in range(10)], delay=0.1)  # a second: three deaths long
    started = time.monotonic()
    response = client.post(
        "/api/chat/stream", json={"conversation_id": conversation_id, "message": "go"}, buffered=False
    )
    statuses = []
    while time.monotonic() - started < 0.8:  # it cannot end before 0.9 s
        statuses.append(messages(client, conversation_id)[-1]["status"])
        assert (
            client.post("/api/chat", json={"conversation_id": conversation_id, "message": "x"}).status_code
            == 409
        )
        time.sleep(0.05)
    assert b"".join(response.response) == b"".join(f"w{n} ".encode() for n in range(10))
    response.close()
    assert set(statuses) == {"streaming"} and len(statuses) >= 8
    assert messages(client, conversation_id)[-1]["status"] == "complete"


# --- The database's share of the work ---------------------------------------------------------


def test_a_request_without_a_conversation_never_touches_the_database(
    client: FlaskClient, statements: list[str]
) -> None:
    for route in ("/api/chat", "/api/chat/stream"):
        assert client.post(route, json={"message": "hello"}).status_code == 200
        assert client.post(route, json={"message": "hello"}, headers=SSE).status_code == 200
    assert statements == []


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_a_turn_touches_the_database_a_few_times_whatever_its_length(
    client: FlaskClient, fake_llm: FakeLLM, statements: list[str], framing: str
) -> None:
    conversation_id = new_conversation(client)
    route, headers = FRAMINGS[framing]
    counts = []
    for length in (2, 200):
        fake_llm.deltas = [f"w{n} " for n in range(length)]
        statements.clear()
        response = client.post(
            route, json={"conversation_id": conversation_id, "message": "go"}, headers=headers
        )
        assert reply_of(framing, response.get_data()) == "".join(fake_llm.deltas)
        counts.append(len(statements))
    assert counts[0] == counts[1] <= 12


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_a_reply_is_stored_as_the_client_received_it(
    client: FlaskClient, fake_llm: FakeLLM, framing: str
) -> None:
    fake_llm.deltas = ["robot \ud83e", "\udd16 ", "\udc00!"]  # a pair split across deltas, a lone half
    conversation_id = new_conversation(client)
    route, headers = FRAMINGS[framing]
    client.post(
        route, json={"conversation_id": conversation_id, "message": "go"}, headers=headers, buffered=True
    )
    assert messages(client, conversation_id)[-1]["content"] == "robot 🤖 \ufffd!"


def test_a_reply_is_stored_before_its_last_byte_goes_out(client: FlaskClient, fake_llm: FakeLLM) -> None:
    conversation_id = new_conversation(client)
    turn = {"conversation_id": conversation_id, "message": "go"}
    # SSE: stored before the done event is handed to the server.
    response = client.post("/api/chat/stream", json=turn, headers=SSE, buffered=False)
    for chunk in response.response:
        if b'"type":"done"' in chunk:
            assert messages(client, conversation_id)[-1]["status"] == "complete"
            break
    else:
        pytest.fail("no done event")
    response.close()
    # Plain text: stored before the body ends (the server then sends the chunked body's end).
    response = client.post("/api/chat/stream", json=turn, buffered=False)
    assert b"".join(response.response) == b"Hi there"
    assert messages(client, conversation_id)[-1]["status"] == "complete"
    response.close()


def test_a_failure_while_storing_a_reply_is_logged_and_stored_once_the_database_is_back(
    client: FlaskClient, fake_llm: FakeLLM, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversation_id = new_conversation(client)
    monkeypatch.setattr(worker, "CHECKPOINT_S", 0.05)
    finish = store.finish
    failures = [OperationalError("UPDATE messages", {}, Exception("disk I/O error"))] * 3

    def flaky(*arguments: Any) -> bool:
        if failures:
            raise failures.pop()
        return finish(*arguments)

    monkeypatch.setattr(store, "finish", flaky)
    response = client.post("/api/chat/stream", json={"conversation_id": conversation_id, "message": "go"})
    assert response.get_data() == b"Hi there"
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    reply_id = response.headers["X-Message-ID"]
    assert record.getMessage() == (
        f"could not store reply {reply_id}: the database failed (OperationalError); trying again every second"
    )
    assert "disk I/O error" not in caplog.text  # the driver's text may quote what was stored
    # The worker keeps trying: once the database answers again, the reply is stored whole.
    assert wait_until(lambda: messages(client, conversation_id)[-1]["status"] == "complete", timeout=5)
    assert messages(client, conversation_id)[-1]["content"] == "Hi there"


# --- What a review found -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "sentence"),
    [
        (
            "/api/conversations",
            {"title": "a\x00b"},
            "'title' contains the NUL character (\\u0000), which cannot be stored.",
        ),
        (
            "/api/chat",
            {"message": "my \x00 text"},
            "'message' contains the NUL character (\\u0000), which cannot be stored.",
        ),
        (
            "/api/chat/stream",
            {"message": "hi", "instructions": "\x00"},
            "'instructions' contains the NUL character (\\u0000), which cannot be stored.",
        ),
    ],
)
def test_text_a_database_cannot_store_is_400_in_a_conversation(
    client: FlaskClient, fake_llm: FakeLLM, path: str, body: dict[str, str], sentence: str
) -> None:
    conversation_id = new_conversation(client)
    if path != "/api/conversations":
        body = {**body, "conversation_id": conversation_id}
    response = client.post(path, json=body)
    assert (response.status_code, response.get_json()) == (400, {"error": sentence})
    assert fake_llm.calls == [] and messages(client, conversation_id) == []


def test_a_reply_with_nul_is_stored_with_a_replacement(client: FlaskClient, fake_llm: FakeLLM) -> None:
    fake_llm.deltas = ["a\x00", "b"]
    conversation_id = new_conversation(client)
    client.post("/api/chat", json={"conversation_id": conversation_id, "message": "go"})
    assert messages(client, conversation_id)[-1]["content"] == "a\ufffdb"


def test_a_rename_lands_on_the_row_as_it_is_now(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversation_id = new_conversation(client)
    found = turns.find(sessions(app), conversation_id, None)  # a snapshot from before the turn
    client.post("/api/chat", json={"conversation_id": conversation_id, "message": "Plan a trip"})
    monkeypatch.setattr(turns, "find", lambda *_: found)
    response = client.patch(f"/api/conversations/{conversation_id}", json={"instructions": "Be brief."})
    monkeypatch.undo()
    assert response.get_json()["title"] == "Plan a trip"  # the turn's title is kept
    client.delete(f"/api/conversations/{conversation_id}")
    monkeypatch.setattr(turns, "find", lambda *_: found)  # a PATCH that raced the DELETE
    response = client.patch(f"/api/conversations/{conversation_id}", json={"title": "back?"})
    monkeypatch.undo()
    assert response.status_code == 404
    assert client.get(f"/api/conversations/{conversation_id}").status_code == 404  # not brought back


def test_reads_take_no_write_lock_and_a_busy_database_is_a_503(
    database: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.store.db.BUSY_TIMEOUT_S", 0.2)
    client = create_app({"TESTING": True, "DEMO_DELAY_MS": "0"}).test_client()
    conversation_id = new_conversation(client)
    other = sqlite3.connect(database.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        started = time.monotonic()
        assert client.get("/api/conversations").status_code == 200
        assert client.get(f"/api/conversations/{conversation_id}").status_code == 200
        assert time.monotonic() - started < 0.2  # readers never waited for the writer
        response = client.post("/api/conversations", json={"title": "secret title"})
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert response.status_code == 503
    assert response.get_json() == {"error": "The database is unavailable or busy; retry shortly."}
    assert response.headers["Retry-After"] == "1"
    [line] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert line.getMessage() == "the database failed: OperationalError" and line.exc_info is None
    assert "secret title" not in caplog.text


def test_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.store import models

    made = iter(["-starts-with-a-dash-xx", "Plain_id-0123456789abc"])
    monkeypatch.setattr(models.secrets, "token_urlsafe", lambda _: next(made))
    assert models.new_id() == "Plain_id-0123456789abc"  # `chat --conversation -x...` would be an option
