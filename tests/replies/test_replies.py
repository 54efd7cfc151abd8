"""Replies that outlive their connection, in one process: the reply log and its ids, readers that
attach and resume, stop, and two app instances (two workers) sharing one database, with and
without a real Redis between them."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, update

from app import create_app
from app.errors import ClientGone, UpstreamError
from app.replies import streams, worker
from app.replies.feed import Feed
from app.replies.log import INTERRUPTED, End, ReplyLog, clean, joined
from app.replies.reader import Reader
from app.replies.store import Stored
from app.replies.streams import Streams
from app.store import writers
from app.store.models import Message, utcnow
from app.upstream.stream import ChatRequest, Reasoning, Usage

from ..support import free_port, sse, wait_until
from ..support.redis_server import RedisServer

SSE = {"Accept": "text/event-stream"}
END: Any = object()
CUT: Any = object()


class Paced:
    """A model the test writes as it goes: ``say`` sends a delta, ``end`` the end of the reply."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Any] = queue.Queue()
        self.said = 0
        self.closed = threading.Event()

    def say(self, *texts: str) -> None:
        for text in texts:
            self.said += 1
            self.queue.put(text)

    def end(self) -> None:
        self.queue.put(END)

    def stream(self, chat: ChatRequest) -> PacedReply:
        return PacedReply(self)

    def close(self) -> None:
        """Nothing to release."""


class PacedReply:
    """One reply of ``Paced``: ``cancel`` hangs up as the OpenAI model's does (its read breaks)."""

    def __init__(self, model: Paced) -> None:
        self.model = model
        self.deltas = self._deltas()

    def __iter__(self) -> Iterator[Any]:
        return self.deltas

    def _deltas(self) -> Iterator[Any]:
        count = 0
        while True:
            item = self.model.queue.get(timeout=30)
            if item is END:
                yield Usage(3, count)
                return
            if item is CUT:
                raise UpstreamError("The connection to the model broke.", reason="upstream_broken")
            count += 1
            yield item

    def cancel(self) -> None:
        self.model.queue.put(CUT)

    def close(self) -> None:
        self.model.closed.set()


MADE: list[Flask] = []


def make_app(database: str, **settings: str) -> tuple[Flask, Paced]:
    """An app (a worker) on ``database`` whose model the test writes."""
    app = create_app({"TESTING": True, "DATABASE_URL": database, **settings})
    model = app.extensions["llm"] = Paced()
    MADE.append(app)
    return app, model


@pytest.fixture(autouse=True)
def quiet_workers() -> Iterator[None]:
    """After each test, its workers' ticker and Redis reader have stopped (no reply left to serve)."""
    yield
    for app in MADE:
        replies = app.extensions["replies"]
        assert wait_until(replies.quiet, timeout=5), "a worker kept running"
    MADE.clear()


@pytest.fixture
def one(database: str) -> tuple[FlaskClient, Paced]:
    app, model = make_app(database)
    return app.test_client(), model


def new_conversation(client: FlaskClient) -> str:
    return str(client.post("/api/conversations", json={}).get_json()["id"])


def last_message(client: FlaskClient, conversation_id: str) -> dict[str, Any]:
    return client.get(f"/api/conversations/{conversation_id}").get_json()["messages"][-1]  # type: ignore[no-any-return]


class Events:
    """A streamed response read event by event (or, for plain text, chunk by chunk)."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self.chunks = iter(response.response)
        self.buffer = ""
        self.got: list[tuple[int | None, dict[str, Any]]] = []

    def take(self, count: int) -> list[tuple[int | None, dict[str, Any]]]:
        """The next ``count`` events (waits for them: the test must have written them)."""
        while len(self.got) < count:
            self.buffer += next(self.chunks).decode()
            complete, _, self.buffer = self.buffer.rpartition("\n\n")
            if complete:
                self.got += sse.numbered(complete)
        taken, self.got = self.got[:count], self.got[count:]
        return taken

    def rest(self) -> list[tuple[int | None, dict[str, Any]]]:
        for chunk in self.chunks:
            self.buffer += chunk.decode()
        found = self.got + sse.numbered(self.buffer)
        self.got, self.buffer = [], ""
        return found

    def close(self) -> None:
        self.response.close()


def start_turn(client: FlaskClient, conversation_id: str, headers: dict[str, str] = SSE) -> Any:
    body = {"conversation_id": conversation_id, "message": "Count for me"}
    return client.post("/api/chat/stream", json=body, headers=headers, buffered=False)


def follow(client: FlaskClient, conversation_id: str, headers: dict[str, str] = SSE, query: str = "") -> Any:
    return client.get(f"/api/conversations/{conversation_id}/stream{query}", headers=headers, buffered=False)


def tokens(found: list[tuple[int | None, dict[str, Any]]]) -> list[tuple[int | None, str]]:
    return [(number, data["content"]) for number, data in found if data["type"] == "token"]


# --- The log ----------------------------------------------------------------------------------


def test_a_log_wakes_its_readers_and_tells_a_bell_from_an_event() -> None:
    log, bell = ReplyLog(), threading.Event()
    assert not log.wait(0, bell, 0.01)
    threading.Timer(0.05, log.add, ("one",)).start()
    assert log.wait(0, bell, 5) and log.events == ["one"]
    threading.Timer(0.05, bell.set).start()
    assert not log.wait(1, bell, 5)  # rung, but nothing new: a reader looks at why
    threading.Timer(0.05, log.finish, (End("complete"),)).start()
    assert log.wait_end(threading.Event(), 5) and log.ready(1)


def test_a_catch_up_joins_each_run_of_one_kind_under_its_last_index() -> None:
    events = ["a", "b", Reasoning("r1"), Reasoning("r2"), "c"]
    assert joined(events) == [("ab", 1), (Reasoning("r1r2"), 3), ("c", 4)]
    assert type(joined(events)[1][0]) is Reasoning
    assert joined([]) == []


@pytest.mark.parametrize(
    ("pieces", "kept"),
    [
        (["robot \ud83e", "\udd16 ok"], ["robot ", "🤖 ok"]),  # a pair split across two deltas
        (["a \udc00 b"], ["a \ufffd b"]),  # a lone half
        (["nul\x00"], ["nul\ufffd"]),  # what Postgres cannot store
    ],
)
def test_a_delta_is_kept_valid_on_its_own(pieces: list[str], kept: list[str]) -> None:
    carry, out = "", []
    for piece in pieces:
        text, carry = clean(piece, carry)
        out.append(text)
    assert (out, carry) == (kept, "")


def checkpointed(content: str, reasoning: str | None, events: str, count: int) -> Stored:
    """A reply's row as a checkpoint leaves it while the reply runs."""
    return Stored(
        id="m",
        conversation_id="c",
        status="streaming",
        content=content,
        reasoning=reasoning,
        events=events,
        last_event=count,
        model=None,
        input_tokens=None,
        output_tokens=None,
        error=None,
        writer=None,
        updated_at=utcnow(),
    )


def test_a_checkpoint_row_rebuilds_the_writers_events() -> None:
    row = checkpointed("Hello world", "thinking", "[-5,5,-3,6]", 4)
    assert row.rebuilt() == [Reasoning("think"), "Hello", Reasoning("ing"), " world"]
    assert row.rebuilt(after=2) == [Reasoning("ing"), " world"]
    assert [type(e) for e in row.rebuilt()] == [Reasoning, str, Reasoning, str]
    assert row.end() is None


# --- One worker: the turn's own reader and reattachments -----------------------------------------


def test_every_event_has_an_id_rising_from_one_and_a_reattachment_resumes_after_one(
    one: tuple[FlaskClient, Paced],
) -> None:
    client, model = one
    conversation_id = new_conversation(client)
    model.say("w1 ")
    own = Events(start_turn(client, conversation_id))
    [(first_id, metadata), (one_id, first)] = own.take(2)
    assert (first_id, metadata["type"]) == (None, "metadata")  # metadata is not numbered
    assert (one_id, first) == (1, {"type": "token", "content": "w1 "})
    model.say("w2 ", "w3 ", "w4 ", "w5 ")
    assert tokens(own.take(4)) == [(2, "w2 "), (3, "w3 "), (4, "w4 "), (5, "w5 ")]
    # A second reader, resuming after event 2: what it missed comes as one event with the last id.
    again = Events(follow(client, conversation_id, {**SSE, "Last-Event-ID": "2"}))
    [(_, metadata2), (joined_id, caught_up)] = again.take(2)
    assert metadata2 | {"request_id": metadata["request_id"]} == metadata
    assert (joined_id, caught_up) == (5, {"type": "token", "content": "w3 w4 w5 "})
    model.say("w6 ")
    assert tokens(own.take(1)) == tokens(again.take(1)) == [(6, "w6 ")]
    model.end()
    for reader in (own, again):
        [(end_id, done)] = reader.rest()
        assert (end_id, done["type"], done["status"]) == (7, "done", "complete")
        assert done["usage"] == {"input_tokens": 3, "output_tokens": 6}
    stored = last_message(client, conversation_id)
    assert (stored["status"], stored["content"]) == ("complete", "w1 w2 w3 w4 w5 w6 ")


def test_a_reattachment_in_plain_text_gets_the_text_so_far_then_the_rest(
    one: tuple[FlaskClient, Paced],
) -> None:
    client, model = one
    conversation_id = new_conversation(client)
    model.say("Once ", "upon ")
    own = Events(start_turn(client, conversation_id))
    own.take(3)
    plain = follow(client, conversation_id, headers={})
    assert plain.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert plain.headers["X-Message-ID"] == own.response.headers["X-Message-ID"]
    chunks = iter(plain.response)
    assert next(chunks) == b"Once upon "
    model.say("a time")
    assert next(chunks) == b"a time"
    model.end()
    assert b"".join(chunks) == b""
    own.rest()


@pytest.mark.parametrize(
    ("query", "headers"),
    [("?after=4", {}), ("?after=1", {"Last-Event-ID": "4"}), ("?after=x", {"Last-Event-ID": "4"})],
    ids=["query", "header-wins", "header-wins-over-a-bad-query"],
)
def test_the_event_to_resume_after_comes_from_last_event_id_else_after(
    one: tuple[FlaskClient, Paced], query: str, headers: dict[str, str]
) -> None:
    client, model = one
    conversation_id = new_conversation(client)
    model.say("a", "b", "c", "d", "e")
    own = Events(start_turn(client, conversation_id))
    own.take(6)
    resumed = Events(follow(client, conversation_id, {**SSE, **headers}, query))
    assert tokens(resumed.take(2)[1:]) == [(5, "e")]
    model.end()
    own.rest()
    resumed.rest()


@pytest.mark.parametrize("value", ["-1", "1.5", "abc", "1" * 19, " 3"])
def test_an_event_id_that_is_not_a_whole_number_is_400(one: tuple[FlaskClient, Paced], value: str) -> None:
    client, _ = one
    conversation_id = new_conversation(client)
    for response in (
        client.get(f"/api/conversations/{conversation_id}/stream", headers={"Last-Event-ID": value}),
        client.get(f"/api/conversations/{conversation_id}/stream", query_string={"after": value}),
    ):
        assert response.status_code == 400
        assert "whole number" in response.get_json()["error"]


def test_with_no_reply_being_written_a_follower_gets_204_but_within_a_minute_the_rest_of_the_last(
    one: tuple[FlaskClient, Paced],
) -> None:
    client, model = one
    conversation_id = new_conversation(client)
    assert follow(client, conversation_id).status_code == 204  # no reply at all
    model.say("a", "b", Reasoning("r"), "c")
    own = Events(start_turn(client, conversation_id))
    model.end()
    assert [n for n, _ in own.rest()] == [None, 1, 2, 3, 4, 5]
    assert follow(client, conversation_id).status_code == 204  # ended, and no event named
    assert follow(client, conversation_id, query="?after=5").status_code == 204  # the final event
    assert follow(client, conversation_id, query="?after=9").status_code == 204  # no such event
    assert follow(client, conversation_id, query="?after=0").status_code == 204
    rest = Events(follow(client, conversation_id, query="?after=1")).rest()
    assert [(n, d["type"], d.get("content")) for n, d in rest[1:]] == [
        (2, "token", "b"),
        (3, "reasoning", "r"),
        (4, "token", "c"),
        (5, "done", None),
    ]
    assert rest[-1][1]["status"] == "complete"
    text = follow(client, conversation_id, headers={}, query="?after=2")
    assert text.get_data() == b"c"
    # A minute after its end, it is over for good.
    with client.application.extensions["db"].begin() as session:
        session.execute(update(Message).values(updated_at=utcnow() - timedelta(seconds=61)))
    assert follow(client, conversation_id, query="?after=1").status_code == 204


def test_a_reply_failing_mid_way_ends_every_reader_with_its_error(one: tuple[FlaskClient, Paced]) -> None:
    client, model = one
    conversation_id = new_conversation(client)
    model.say("Half ")
    own = Events(start_turn(client, conversation_id))
    own.take(2)
    plain = follow(client, conversation_id, headers={})
    model.queue.put(CUT)
    [(end_id, error)] = own.rest()
    assert (end_id, error) == (
        2,
        {"type": "error", "message": "The connection to the model broke.", "status": "error"},
    )
    assert plain.get_data() == b"Half \n[error: The connection to the model broke.]"
    stored = last_message(client, conversation_id)
    assert (stored["status"], stored["content"]) == ("error", "Half ")


def test_a_failure_before_any_text_answers_with_its_status(one: tuple[FlaskClient, Paced]) -> None:
    client, model = one
    conversation_id = new_conversation(client)
    model.queue.put(CUT)
    response = start_turn(client, conversation_id)
    assert (response.status_code, response.get_json()) == (
        502,
        {"error": "The connection to the model broke."},
    )
    assert last_message(client, conversation_id)["status"] == "error"


def test_stop_ends_the_reply_for_every_reader_and_answers_with_the_stored_message(
    one: tuple[FlaskClient, Paced],
) -> None:
    client, model = one
    conversation_id = new_conversation(client)
    model.say("One ", "two ")
    own = Events(start_turn(client, conversation_id))
    own.take(3)
    other = Events(follow(client, conversation_id))
    other.take(2)
    stopped = client.post(f"/api/conversations/{conversation_id}/stop")
    assert stopped.status_code == 200
    assert model.closed.is_set()  # the model was hung up on
    message = stopped.get_json()
    assert (message["status"], message["content"], message["id"]) == (
        "stopped",
        "One two ",
        own.response.headers["X-Message-ID"],
    )
    for reader in (own, other):
        [(end_id, done)] = reader.rest()
        assert (end_id, done["type"], done["status"]) == (3, "done", "stopped")
    assert client.post(f"/api/conversations/{conversation_id}/stop").status_code == 204  # twice: harmless
    assert last_message(client, conversation_id) == message


def test_stop_and_follow_need_a_conversation_of_ones_own(database: str) -> None:
    app, _ = make_app(database, API_KEYS="key-one,key-two")
    client = app.test_client()
    owner, other = ({"Authorization": f"Bearer {key}"} for key in ("key-one", "key-two"))
    conversation_id = client.post("/api/conversations", json={}, headers=owner).get_json()["id"]
    for method, path in (("POST", "stop"), ("GET", "stream")):
        response = client.open(f"/api/conversations/{conversation_id}/{path}", method=method, headers=other)
        assert response.status_code == 404
        assert client.open(f"/api/conversations/{conversation_id}/{path}", method=method).status_code == 401
        assert (
            client.open(
                f"/api/conversations/{conversation_id}/{path}", method=method, headers=owner
            ).status_code
            == 204
        )


def test_a_reply_being_written_counts_against_its_client_until_it_ends(database: str) -> None:
    app, _ = make_app(database, MAX_STREAMS_PER_CLIENT="2")
    first_model, second_model = Paced(), Paced()
    app.extensions["llm"] = Switch([first_model, second_model])
    client = app.test_client()
    first, second = new_conversation(client), new_conversation(client)
    first_model.say("a")
    turn = Events(start_turn(client, first))
    turn.take(2)
    turn.close()  # its client left: the reply goes on, and still counts
    reader = follow(client, first)
    assert reader.status_code == 200  # a reader counts like any stream: two now
    assert start_turn(client, second).status_code == 429
    reader.close()
    other = Events(start_turn(client, second))  # two replies being written
    second_model.say("b")
    other.take(2)
    assert follow(client, first).status_code == 429
    first_model.end()
    assert wait_until(lambda: last_message(client, first)["status"] == "complete")
    assert wait_until(lambda: len(app.extensions["replies"].jobs) == 1)
    reader = follow(client, second)
    assert reader.status_code == 200  # the ended reply gave its slot back
    reader.close()
    second_model.end()
    other.rest()


def test_a_conversation_with_a_reply_being_written_is_marked_in_the_list(
    one: tuple[FlaskClient, Paced],
) -> None:
    client, model = one
    busy, idle = new_conversation(client), new_conversation(client)
    model.say("a")
    own = Events(start_turn(client, busy))
    own.take(2)
    listed = {c["id"]: c["streaming"] for c in client.get("/api/conversations").get_json()["conversations"]}
    assert listed == {busy: True, idle: False}
    assert client.get(f"/api/conversations/{busy}").get_json()["streaming"] is True
    model.end()
    own.rest()
    listed = {c["id"]: c["streaming"] for c in client.get("/api/conversations").get_json()["conversations"]}
    assert listed == {busy: False, idle: False}


# --- The database's share: checkpoints, batched, never per delta ---------------------------------


def test_a_workers_checkpoints_go_in_one_transaction_per_second_whatever_its_replies(
    one: tuple[FlaskClient, Paced],
) -> None:
    client, _ = one
    app = client.application
    models = [Paced() for _ in range(3)]
    app.extensions["llm"] = Switch(models)
    seen: list[tuple[str, int]] = []  # each write transaction and each update of a reply's text

    def count(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, many: bool) -> None:
        if statement.startswith(("BEGIN IMMEDIATE", "UPDATE messages SET content")):
            seen.append((statement.split(" SET")[0], len(parameters) if many else 1))

    event.listen(app.extensions["db"].kw["bind"], "before_cursor_execute", count)
    for model in models:
        model.say("x")
    readers = [Events(start_turn(client, new_conversation(client))) for _ in models]
    seen.clear()
    started = time.monotonic()
    while time.monotonic() - started < 2.5:  # a delta to each every 10 ms: hundreds each
        for model in models:
            model.say("x")
        time.sleep(0.01)
    during = list(seen)
    for model, reader in zip(models, readers, strict=True):
        model.end()
        reader.rest()
    # A checkpoint a second: one write transaction, with one statement for all three replies.
    assert during in ([("BEGIN IMMEDIATE", 1), ("UPDATE messages", 3)] * n for n in (2, 3))
    assert all(last_message(client, m["id"])["status"] == "complete" for m in listed(client))


def listed(client: FlaskClient) -> list[dict[str, Any]]:
    return client.get("/api/conversations").get_json()["conversations"]  # type: ignore[no-any-return]


class Switch:
    """Hands each turn the next of several models."""

    def __init__(self, models: list[Paced]) -> None:
        self.models = iter(models)

    def stream(self, chat: ChatRequest) -> PacedReply:
        return next(self.models).stream(chat)

    def close(self) -> None:
        """Nothing to release."""


# --- Two workers sharing the database, without Redis -------------------------------------------


@pytest.fixture
def two(database: str) -> tuple[FlaskClient, Paced, FlaskClient]:
    """Two workers on one SQLite file: the test's model writes on the first."""
    writer, model = make_app(database)
    reader, _ = make_app(database)
    return writer.test_client(), model, reader.test_client()


def test_a_reader_on_another_worker_follows_the_checkpoints(
    two: tuple[FlaskClient, Paced, FlaskClient],
) -> None:
    writing, model, other = two
    conversation_id = new_conversation(writing)
    model.say("a", "b", Reasoning("think"), "c")
    own = Events(start_turn(writing, conversation_id))
    own.take(5)
    follower = Events(follow(other, conversation_id, {**SSE, "Last-Event-ID": "1"}))
    began = time.monotonic()
    [(_, metadata), *caught_up] = follower.take(3)  # from the first checkpoint, within a second
    assert time.monotonic() - began < 1.5
    assert metadata["message_id"] == own.response.headers["X-Message-ID"]
    assert [(n, d["type"], d["content"]) for n, d in caught_up] == [
        (2, "token", "b"),
        (3, "reasoning", "think"),
    ]
    assert tokens(follower.take(1)) == [(4, "c")]
    model.say("d")
    began = time.monotonic()
    assert tokens(follower.take(1)) == [(5, "d")]
    assert time.monotonic() - began < 1.5  # at most a checkpoint and a poll behind
    model.end()
    [(end_id, done)] = follower.rest()
    assert (end_id, done["status"]) == (6, "complete")
    own.rest()


def test_a_stop_on_another_worker_reaches_the_writer_through_the_database(
    two: tuple[FlaskClient, Paced, FlaskClient],
) -> None:
    writing, model, other = two
    conversation_id = new_conversation(writing)
    model.say("One ", "two ")
    own = Events(start_turn(writing, conversation_id))
    own.take(3)
    began = time.monotonic()
    stopped = other.post(f"/api/conversations/{conversation_id}/stop")
    assert model.closed.wait(1)
    assert time.monotonic() - began < 1.0  # the writer looks for stops four times a second
    assert (stopped.status_code, stopped.get_json()["status"], stopped.get_json()["content"]) == (
        200,
        "stopped",
        "One two ",
    )
    [(_, done)] = own.rest()
    assert done["status"] == "stopped"


def test_a_stop_its_writer_never_acts_on_is_stored_by_the_worker_asked(
    two: tuple[FlaskClient, Paced, FlaskClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    writing, model, other = two
    monkeypatch.setattr(worker, "STOP_CHECK_S", 60.0)  # the writer is too busy to look
    monkeypatch.setattr(worker, "STOP_WAIT_S", 0.3)
    conversation_id = new_conversation(writing)
    model.say("One ")
    own = Events(start_turn(writing, conversation_id))
    own.take(2)
    assert wait_until(lambda: last_message(other, conversation_id)["content"] == "One ", timeout=3)
    stopped = other.post(f"/api/conversations/{conversation_id}/stop")
    assert (stopped.status_code, stopped.get_json()["status"]) == (200, "stopped")
    # Its writer's next checkpoint finds it ended: it stops too, and never writes it again.
    assert model.closed.wait(3)
    model.say("lost")
    assert last_message(writing, conversation_id)["content"] == "One "
    own.close()


# --- Two workers (or hosts) with Redis between them --------------------------------------------


@pytest.fixture
def linked(database: str, redis_url: str) -> tuple[FlaskClient, Paced, FlaskClient]:
    """Two workers sharing the database and a real Redis: the test's model writes on the first."""
    writer, model = make_app(database, REDIS_URL=redis_url)
    reader, _ = make_app(database, REDIS_URL=redis_url)
    return writer.test_client(), model, reader.test_client()


def test_a_reader_on_another_worker_follows_redis_event_by_event(
    linked: tuple[FlaskClient, Paced, FlaskClient],
) -> None:
    writing, model, other = linked
    conversation_id = new_conversation(writing)
    model.say("a", "b")
    own = Events(start_turn(writing, conversation_id))
    own.take(3)
    follower = Events(follow(other, conversation_id))
    follower.take(1)  # metadata; what it has so far comes from the checkpoint or Redis, then live
    got: list[tuple[int | None, str]] = []
    lags = []
    for number in range(3, 23):
        model.say(f"w{number}")
        said = time.monotonic()
        while not got or got[-1][0] != number:
            got += tokens(follower.take(1))
        lags.append(time.monotonic() - said)
    assert [n for n, _ in got] == sorted({n for n, _ in got})  # in order, none twice
    assert "".join(text for _, text in got).endswith("".join(f"w{n}" for n in range(3, 23)))
    assert max(lags) < 0.5  # live, event by event (make bench measures the figure)
    model.end()
    assert follower.rest()[-1][1]["status"] == "complete"
    own.rest()


def test_a_stop_on_another_worker_reaches_the_writer_through_redis(
    linked: tuple[FlaskClient, Paced, FlaskClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    writing, model, other = linked
    monkeypatch.setattr(worker, "STOP_CHECK_S", 60.0)  # only Redis can tell the writer in time
    conversation_id = new_conversation(writing)
    model.say("One ")
    own = Events(start_turn(writing, conversation_id))
    own.take(2)
    began = time.monotonic()
    stopped = other.post(f"/api/conversations/{conversation_id}/stop")
    assert stopped.status_code == 200 and stopped.get_json()["status"] == "stopped"
    assert model.closed.is_set() and time.monotonic() - began < 1.0
    own.rest()


def test_readers_of_a_reply_on_one_worker_share_one_redis_connection(
    linked: tuple[FlaskClient, Paced, FlaskClient], redis_url: str
) -> None:
    writing, model, other = linked
    conversation_id = new_conversation(writing)
    model.say("a")
    own = Events(start_turn(writing, conversation_id))
    own.take(2)
    admin = redis.Redis.from_url(redis_url)
    first = Events(follow(other, conversation_id))
    first.take(2)
    with_one = admin.client_list()
    readers = [Events(follow(other, conversation_id)) for _ in range(10)]
    for reader in readers:
        reader.take(2)
    model.say("b")
    for reader in [first, *readers]:
        assert tokens(reader.take(1)) == [(2, "b")]
    assert len(admin.client_list()) == len(with_one)  # ten more readers, no more connections
    model.end()
    for reader in [own, first, *readers]:
        reader.rest()
    admin.close()


def test_an_ended_replys_stream_expires_and_a_long_one_is_capped(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams, "MAXLEN", 50)
    publisher = streams.Streams(redis_url)
    for number in range(1, 1001):
        assert publisher.publish([("m1", ["x"], number, None, number == 1)])
    admin = redis.Redis.from_url(redis_url)
    assert 50 <= admin.xlen(streams.key("m1")) < 200  # trimmed by whole nodes of about 100 entries
    assert 0 < admin.ttl(streams.key("m1")) <= streams.RUNNING_TTL_S
    assert publisher.publish([("m1", [], 1000, End("complete"), False)])
    assert 60 <= admin.ttl(streams.key("m1")) <= streams.ENDED_TTL_S
    [(entry_id, fields)] = admin.xrevrange(streams.key("m1"), count=1)
    assert (entry_id, streams.unpack_end(fields[b"end"].decode())) == (b"0-1001", End("complete"))
    admin.close()
    publisher.close()


def test_redis_going_away_mid_reply_costs_no_reply(
    linked: tuple[FlaskClient, Paced, FlaskClient],
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    writing, model, other = linked
    conversation_id = new_conversation(writing)
    model.say("a")
    own = Events(start_turn(writing, conversation_id))
    own.take(2)
    follower = Events(follow(other, conversation_id))
    follower.take(2)
    with caplog.at_level(logging.WARNING):
        redis_server.kill()
        for number in range(2, 40):
            model.say(f" {number}")
            time.sleep(0.01)
        assert tokens(own.take(38))[-1] == (39, " 39")  # its own worker's readers follow it live
        model.end()
        [*_, (end_id, done)] = own.rest()
        assert (end_id, done["status"]) == (40, "complete")
        # The other worker's reader followed the database instead, and gets it all.
        rest = follower.rest()
    assert "".join(text for _, text in tokens(rest)) == "".join(f" {n}" for n in range(2, 40))
    assert rest[-1][1]["status"] == "complete"
    assert last_message(writing, conversation_id)["content"] == "a" + "".join(f" {n}" for n in range(2, 40))
    warnings = [r.getMessage() for r in caplog.records if "Redis is unreachable" in r.getMessage()]
    assert 1 <= len(warnings) <= 2  # a line per worker that noticed, not one per event


# --- A reader on its own, a job that breaks, a worker shutting down ------------------------------


def reader_of(log: ReplyLog, framing: str, **options: Any) -> Reader:
    return Reader(log, time.perf_counter(), framing=framing, **options)


def test_a_reader_whose_client_left_stops_waiting_and_says_so_once() -> None:
    log, left = ReplyLog(["Hi"]), []
    reader = reader_of(log, "json", on_leave=lambda: left.append(1))
    threading.Timer(0.05, reader.hung_up, ("client_stalled",)).start()
    with pytest.raises(ClientGone):
        reader.text()  # waits for the end, which never comes: the client's leaving wakes it
    assert (reader.outcome, reader.reason, left) == ("disconnected", "client_stalled", [1])
    reader.close()
    assert left == [1]  # told once
    log.finish(End("complete"))


def test_a_reader_that_read_to_the_end_is_not_a_departure() -> None:
    log, left = ReplyLog(["Hi", " there"]), []
    log.finish(End("complete", usage=Usage(1, 2)))
    reader = reader_of(log, "text", on_leave=lambda: left.append(1))
    assert b"".join(reader) == b"Hi there"
    reader.close()
    assert (left, reader.outcome, reader.chunks, reader.chars, reader.over()) == ([], "complete", 2, 8, True)
    reader.hung_up(None)  # a hang-up after the end changes nothing
    assert reader.outcome == "complete"


def test_a_silent_reply_gets_pings_and_a_reader_gone_mid_silence_ends() -> None:
    log = ReplyLog()
    reader = reader_of(log, "sse", ping_s=0.01)
    body = iter(reader)
    assert next(body).startswith(b'data: {"type":"metadata"')
    assert next(body) == b": ping\n\n"
    log.add(Reasoning("hmm"))
    assert next(body) == b'id: 1\ndata: {"type":"reasoning","content":"hmm"}\n\n'
    reader.hung_up(None)
    assert list(body) == []
    assert (reader.outcome, reader.reasoning_chars, reader.ttft_ms) == ("disconnected", 3, None)
    reader.close()


def test_a_reader_opening_on_a_reply_that_failed_first_raises_its_error() -> None:
    log = ReplyLog()
    failure = UpstreamError("The model service could not be reached.", reason="upstream_unreachable")
    log.finish(End("error", message=failure.message, error=failure, reason=failure.reason))
    reader = reader_of(log, "sse")
    with pytest.raises(UpstreamError):
        reader.open(0.01, None)
    assert (reader.outcome, reader.reason) == ("error", "upstream_unreachable")
    again = reader_of(ReplyLog(["x"]), "text", after=0)
    again.open(0.01, None)  # text came first: the response starts, and a failure comes in-band


def test_an_interrupted_reply_ends_a_plain_text_reader_with_a_line() -> None:
    log = ReplyLog(["Half"])
    log.finish(End("interrupted", message=INTERRUPTED, reason="interrupted"))
    reader = reader_of(log, "text")
    assert b"".join(reader) == f"Half\n[error: {INTERRUPTED}]".encode()
    assert (reader.outcome, reader.reason) == ("error", "interrupted")


class Broken:
    """A model with a bug in it: its stream raises what no model should."""

    def stream(self, chat: ChatRequest) -> Iterator[Any]:
        yield "Hi"
        raise KeyError("surprise")

    def close(self) -> None:
        """Nothing to release."""


def test_a_bug_while_writing_a_reply_is_logged_once_and_stored_as_an_error(
    one: tuple[FlaskClient, Paced], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = one
    client.application.extensions["llm"] = Broken()
    conversation_id = new_conversation(client)
    body = Events(start_turn(client, conversation_id)).rest()
    assert body[-1] == (
        2,
        {"type": "error", "message": "The server hit an unexpected error.", "status": "error"},
    )
    [bug] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert bug.getMessage() == "unhandled KeyError while writing a reply" and bug.exc_info is not None
    assert (
        last_message(client, conversation_id)["status"],
        last_message(client, conversation_id)["content"],
    ) == (
        "error",
        "Hi",
    )


def test_a_worker_shutting_down_stores_its_running_replies_as_interrupted(
    one: tuple[FlaskClient, Paced],
) -> None:
    client, model = one
    conversation_id = new_conversation(client)
    model.say("Half ", "way")
    own = Events(start_turn(client, conversation_id))
    own.take(3)
    replies = client.application.extensions["replies"]
    began = time.monotonic()
    replies.shutdown(time.monotonic() + 0.2, time.monotonic() + 2)  # the graceful time passes
    assert 0.2 <= time.monotonic() - began < 2
    assert own.rest() == [(3, {"type": "error", "message": INTERRUPTED, "status": "interrupted"})]
    stored = last_message(client, conversation_id)
    assert (stored["status"], stored["content"]) == ("interrupted", "Half way")


def test_deleting_a_conversation_stops_the_reply_being_written_in_it(one: tuple[FlaskClient, Paced]) -> None:
    client, model = one
    conversation_id = new_conversation(client)
    model.say("a")
    own = Events(start_turn(client, conversation_id))
    own.take(2)
    assert client.delete(f"/api/conversations/{conversation_id}").status_code == 204
    assert model.closed.wait(2)  # its worker's next look at the database finds the row gone
    assert own.rest()[-1][1]["status"] == "stopped"


def test_a_reply_whose_writer_fell_silent_is_interrupted_for_a_reader_elsewhere(
    two: tuple[FlaskClient, Paced, FlaskClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    writing, model, other = two
    conversation_id = new_conversation(writing)
    model.say("a")
    own = Events(start_turn(writing, conversation_id))
    own.take(2)
    follower = Events(follow(other, conversation_id))
    follower.take(1)
    # As if its writer were on a host gone silent: no checkpoint for longer than the stale time.
    with writing.application.extensions["db"].begin() as session:
        session.execute(
            update(Message)
            .where(Message.role == "assistant")
            .values(writer="elsewhere/1", updated_at=utcnow() - timedelta(seconds=120))
        )
    assert follower.rest()[-1][1] == {"type": "error", "message": INTERRUPTED, "status": "interrupted"}
    assert last_message(other, conversation_id)["status"] == "interrupted"
    model.end()
    own.rest()


def test_a_feed_takes_entries_in_order_and_asks_for_the_database_on_a_gap() -> None:
    feed = Feed(checkpointed("ab", None, "[1,1]", 2))
    assert feed.take(3, ["b", "c"], None)  # overlaps what it has: only the new one is added
    assert feed.log.events == ["a", "b", "c"]
    assert not feed.take(6, ["e", "f"], None)  # event 4 is missing
    assert not feed.take(7, [], End("complete"))  # an end past missing events waits for them
    assert feed.take(3, [], End("complete")) and not feed.ended()  # an end it already passed: ignored
    assert feed.take(4, [], End("complete")) and feed.ended()


def test_a_redis_that_cannot_be_reached_is_left_alone_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    nobody = Streams(f"redis://127.0.0.1:{free_port()}/0")
    with caplog.at_level(logging.WARNING):
        assert not nobody.publish([("m1", ["x"], 1, None, True)])
        assert not nobody.usable()
        assert not nobody.request_stop("m1")  # not even tried within the wait
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["Redis is unreachable"]
    nobody.close()


def test_a_writer_is_judged_gone_only_in_its_own_host_and_pid_namespace() -> None:
    here = writers.worker_id()
    host, namespace, pid = here.split("/")
    assert pid == str(os.getpid()) and not writers.writer_is_gone(here)
    assert writers.writer_is_gone(f"{host}/{namespace}/{2**22 + 7}")  # no such process here
    # Another container may share the host name, but not the pid namespace: nothing is known of it.
    assert not writers.writer_is_gone(f"{host}/{int(namespace) + 1}/{2**22 + 7}")
    assert not writers.writer_is_gone(f"elsewhere/{namespace}/{2**22 + 7}")
    assert not writers.writer_is_gone(None) and not writers.writer_is_gone("old-style/123")


def test_a_client_resuming_an_older_reply_is_not_given_a_newer_one(one: tuple[FlaskClient, Paced]) -> None:
    client, model = one
    conversation_id = new_conversation(client)
    model.say("first")
    model.end()
    first = Events(start_turn(client, conversation_id)).rest()
    first_id = first[0][1]["message_id"]
    model.say("second")
    own = Events(start_turn(client, conversation_id))
    own.take(2)
    # Its ids count within its own reply: event 1 of the first reply is not event 1 of this one.
    stale = follow(client, conversation_id, {**SSE, "Last-Event-ID": "1"}, f"?reply={first_id}")
    assert stale.status_code == 204
    current = Events(follow(client, conversation_id, SSE, f"?reply={own.response.headers['X-Message-ID']}"))
    assert tokens(current.take(2)[1:]) == [(1, "second")]
    model.end()
    own.rest()
    current.rest()


def test_a_reader_ahead_of_the_reply_gets_no_ping_for_each_event_it_already_has() -> None:
    log = ReplyLog()
    reader = reader_of(log, "sse", after=5, ping_s=0.3)
    body = iter(reader)
    next(body)  # metadata
    for number in range(1, 6):
        threading.Timer(0.02 * number, log.add, (f"w{number}",)).start()
    threading.Timer(0.2, log.add, ("w6",)).start()
    assert next(body) == b'id: 6\ndata: {"type":"token","content":"w6"}\n\n'  # no ping before it
    log.finish(End("complete"))
    assert list(body)[-1].startswith(b'id: 7\ndata: {"type":"done"')


def test_a_failed_reply_keeps_its_sentence_for_readers_who_come_later(one: tuple[FlaskClient, Paced]) -> None:
    client, model = one
    conversation_id = new_conversation(client)
    model.say("Half ")
    model.queue.put(CUT)
    Events(start_turn(client, conversation_id)).rest()
    message = last_message(client, conversation_id)
    assert (message["status"], message["error"]) == ("error", "The connection to the model broke.")


def test_a_gap_in_redis_sends_the_follower_to_the_database_not_round_in_circles(
    linked: tuple[FlaskClient, Paced, FlaskClient], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    writing, model, other = linked
    conversation_id = new_conversation(writing)
    model.say("a")
    own = Events(start_turn(writing, conversation_id))
    own.take(2)
    follower = Events(follow(other, conversation_id))
    follower.take(2)
    reads = []
    replies = other.application.extensions["replies"]
    original = replies.streams.read
    monkeypatch.setattr(replies.streams, "read", lambda cursors: reads.append(1) or original(cursors))
    admin = redis.Redis.from_url(redis_url)
    message_id = own.response.headers["X-Message-ID"]
    admin.xadd(streams.key(message_id), {"e": streams.pack(["far"])}, id="0-90")  # events 2 to 89 missing
    time.sleep(1.0)  # the loop's pace over a second is what is measured
    assert len(reads) < 20  # without the database step, thousands
    admin.close()
    model.end()
    own.rest()
    follower.close()
