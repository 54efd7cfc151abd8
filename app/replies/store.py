"""A reply in the database: its checkpoints while it runs, its end, stop requests, and how a worker
that does not write it reads it back.

A running reply's row holds its text, its reasoning, and the lengths of its events (negative
for reasoning), so any worker can rebuild its events, numbered as the writer numbered them.
All of a worker's checkpoints go in one transaction per interval; a row that has ended is
never written again (every write here asks for ``status = 'streaming'``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, false, select, update
from sqlalchemy.orm import Session, sessionmaker

from ..store.db import transaction
from ..store.models import Conversation, Message, utcnow
from ..upstream.stream import Reasoning, Usage
from .log import INTERRUPTED, End, Event

IN_CHUNK = 500  # ids per IN (...) list: far below every database's limit on parameters
COLUMNS = [
    Message.__table__.c[name]
    for name in (
        "id",
        "conversation_id",
        "status",
        "content",
        "reasoning",
        "events",
        "last_event",
        "model",
        "input_tokens",
        "output_tokens",
        "error",
        "writer",
        "updated_at",
    )
]


@dataclass(frozen=True, slots=True)
class Stored:
    """A reply's row, as a worker that does not write it sees it."""

    id: str
    conversation_id: str
    status: str
    content: str
    reasoning: str | None
    events: str | None
    last_event: int
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    error: str | None
    writer: str | None
    updated_at: datetime

    def rebuilt(self, after: int = 0) -> list[Event]:
        """Its events past the first ``after``, rebuilt from the texts and the stored lengths."""
        lengths = json.loads(self.events) if self.events else []
        events: list[Event] = []
        answer = thought = 0
        for number, length in enumerate(lengths, 1):
            if length >= 0:
                piece: Event = self.content[answer : answer + length]
                answer += length
            else:
                piece = Reasoning((self.reasoning or "")[thought : thought - length])
                thought -= length
            if number > after:
                events.append(piece)
        return events

    def end(self) -> End | None:
        """How it ended, as stored; None while it is being written."""
        if self.status == "streaming":
            return None
        usage = None
        if self.input_tokens is not None and self.output_tokens is not None:
            usage = Usage(self.input_tokens, self.output_tokens)
        message = self.error or (INTERRUPTED if self.status == "interrupted" else None)
        return End(self.status, usage=usage, message=message)


# Built once: SQLAlchemy's building of a statement (coercions, then a cache key) cost more than
# running it, at every turn's end and every checkpoint (cProfile under gevent). On the tables, not
# the ORM classes, so no ORM bulk-update machinery runs either.
MESSAGES: Table = Message.__table__  # type: ignore[assignment]
CONVERSATIONS: Table = Conversation.__table__  # type: ignore[assignment]
RUNNING = MESSAGES.c.status == "streaming"
READ = select(*COLUMNS).where(MESSAGES.c.id == bindparam("m"))
LATEST = (
    select(*COLUMNS)
    .where(MESSAGES.c.conversation_id == bindparam("c"), MESSAGES.c.role == "assistant")
    .order_by(MESSAGES.c.seq.desc())
    .limit(1)
)
CHECKPOINTED = ("content", "reasoning", "events", "last_event", "updated_at")
CHECKPOINT = (
    update(MESSAGES)
    .where(MESSAGES.c.id == bindparam("m"), RUNNING)
    .values({name: bindparam(f"v_{name}") for name in CHECKPOINTED})
)
BEAT = (
    update(MESSAGES)
    .where(MESSAGES.c.id.in_(bindparam("ids", expanding=True)), RUNNING)
    .values(updated_at=bindparam("now"))
)
STILL_RUNNING = select(MESSAGES.c.id).where(
    MESSAGES.c.id.in_(bindparam("ids", expanding=True)), RUNNING, MESSAGES.c.stop_requested.is_(false())
)
ENDED = ("status", "content", "reasoning", "events", "last_event", "input_tokens", "output_tokens", "error")
FINISH = (
    update(MESSAGES)
    .where(MESSAGES.c.id == bindparam("m"), RUNNING)
    .values({name: bindparam(f"v_{name}") for name in (*ENDED, "updated_at")})
)
TOUCH = update(CONVERSATIONS).where(CONVERSATIONS.c.id == bindparam("c")).values(updated_at=bindparam("now"))
ASK_TO_STOP = update(MESSAGES).where(MESSAGES.c.id == bindparam("m"), RUNNING).values(stop_requested=True)
END_ABANDONED = (
    update(MESSAGES)
    .where(MESSAGES.c.id == bindparam("m"), RUNNING)
    .values(status=bindparam("v_status"), error=bindparam("v_error"), updated_at=bindparam("now"))
)


def read(db: sessionmaker[Session], message_id: str) -> Stored | None:
    """The reply's row, or None when it is gone (its conversation deleted)."""
    with transaction(db, reads_only=True) as sql:
        row = sql.execute(READ, {"m": message_id}).first()
    return None if row is None else Stored(**row._asdict())


READ_MANY = select(*COLUMNS).where(MESSAGES.c.id.in_(bindparam("ids", expanding=True)))


def read_many(db: sessionmaker[Session], message_ids: Sequence[str]) -> dict[str, Stored]:
    """The rows of these replies that still exist, by id: one query for many followed replies."""
    found: dict[str, Stored] = {}
    with transaction(db, reads_only=True) as sql:
        for start in range(0, len(message_ids), IN_CHUNK):
            for row in sql.execute(READ_MANY, {"ids": list(message_ids[start : start + IN_CHUNK])}):
                found[row.id] = Stored(**row._asdict())
    return found


def latest_reply(db: sessionmaker[Session], conversation_id: str) -> Stored | None:
    """The conversation's newest assistant message, or None when it has none."""
    with transaction(db, reads_only=True) as sql:
        row = sql.execute(LATEST, {"c": conversation_id}).first()
    return None if row is None else Stored(**row._asdict())


def checkpoint(
    db: sessionmaker[Session], changed: Sequence[dict[str, object]], beating: Sequence[str]
) -> None:
    """Store what the worker's running replies wrote since the last time, and mark the others as
    still alive: one transaction for all of them."""
    now = utcnow()
    with transaction(db) as sql:
        if changed:
            rows = [
                {
                    "m": row["id"],
                    **{f"v_{name}": row[name] for name in CHECKPOINTED[:-1]},
                    "v_updated_at": now,
                }
                for row in changed
            ]
            sql.execute(CHECKPOINT, rows)
        for start in range(0, len(beating), IN_CHUNK):
            sql.execute(BEAT, {"ids": list(beating[start : start + IN_CHUNK]), "now": now})


def asked_to_stop(db: sessionmaker[Session], message_ids: Sequence[str]) -> set[str]:
    """Which of these replies should stop: a stop was asked for, or their row no longer says
    they are being written (they were stored as ended by someone else, or deleted)."""
    keep: set[str] = set()
    with transaction(db, reads_only=True) as sql:
        for start in range(0, len(message_ids), IN_CHUNK):
            keep.update(
                sql.execute(STILL_RUNNING, {"ids": list(message_ids[start : start + IN_CHUNK])}).scalars()
            )
    return set(message_ids) - keep


def finish(db: sessionmaker[Session], conversation_id: str, message_id: str, values: dict[str, Any]) -> bool:
    """Store how a reply ended (``values``: see ``end_values``); False when it had already ended
    (or was deleted) meanwhile."""
    now = utcnow()
    with transaction(db) as sql:
        params = {"m": message_id, **{f"v_{name}": values[name] for name in ENDED}, "v_updated_at": now}
        stored = sql.execute(FINISH, params).rowcount
        sql.execute(TOUCH, {"c": conversation_id, "now": now})
    return bool(stored)


def end_values(end: End, content: str, reasoning: str, events: str, count: int) -> dict[str, Any]:
    """The columns a reply's end sets."""
    usage = end.usage
    return {
        "status": end.status,
        "content": content,
        "reasoning": reasoning or None,
        "events": events,
        "last_event": count,
        "input_tokens": usage.input_tokens if usage else None,
        "output_tokens": usage.output_tokens if usage else None,
        "error": end.message if end.status in ("error", "interrupted") else None,
    }


def request_stop(db: sessionmaker[Session], message_id: str) -> bool:
    """Ask the worker writing the reply to stop it (it looks every quarter of a second); False if
    it is no longer being written."""
    with transaction(db) as sql:
        return bool(sql.execute(ASK_TO_STOP, {"m": message_id}).rowcount)


def end_abandoned(db: sessionmaker[Session], reply: Stored, status: str) -> bool:
    """Store a reply whose writer is gone (or unresponsive) as ended, with its checkpointed text."""
    error = INTERRUPTED if status == "interrupted" else None
    params = {"m": reply.id, "v_status": status, "v_error": error, "now": utcnow()}
    with transaction(db) as sql:
        return bool(sql.execute(END_ABANDONED, params).rowcount)
