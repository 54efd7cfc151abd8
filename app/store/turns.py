"""A conversation turn's storage at its start: the user's message, stored before the model is called,
and the reply's row, marked as being written by this worker. The reply itself is written,
checkpointed and stored by ``app.replies``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from ..errors import ApiError
from ..upstream.stream import MAX_TURNS, ChatRequest
from .db import reading, transaction
from .models import ID_LENGTH, Conversation, Message, new_id, utcnow
from .writers import is_abandoned

TITLE_WORDS_CHARS = 60
ID = re.compile(rf"[A-Za-z0-9_-]{{{ID_LENGTH}}}")  # what new_id() makes


class Busy(ApiError):
    """Another reply in the conversation is still being written."""

    status = 409


def not_found() -> ApiError:
    return ApiError("There is no conversation with that id.", 404)


def find(db: sessionmaker[Session], conversation_id: str, owner: str | None) -> Conversation:
    """The owner's conversation with that id, or a 404 (also for anyone else's)."""
    if ID.fullmatch(conversation_id) is None:
        raise not_found()  # no id looks like that: spare the database the lookup
    with reading(db) as session:
        conversation = session.get(Conversation, conversation_id)
    if conversation is None or conversation.owner != owner:
        raise not_found()
    return conversation


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn started: its conversation, and the reply being written for it."""

    conversation_id: str
    reply_id: str


# Built once rather than per turn: building SQLAlchemy statements took a quarter of a turn's
# opening (cProfile under gevent: 0.6 of 2.6 ms, in coercions and cache keys).
LOCK = (
    select(Conversation.owner, Conversation.title, Conversation.instructions, Conversation.model)
    .where(Conversation.id == bindparam("c"))
    .with_for_update()
)
INTERRUPT = (
    update(Message)
    .where(Message.conversation_id == bindparam("c"), Message.status == "streaming")
    .values(status="interrupted")
)
# The newest turns with text (the model's context) and any reply still marked as being written,
# which is always among the newest: the next turn's start ends it.
HISTORY = (
    select(Message.role, Message.content, Message.status, Message.writer, Message.updated_at)
    .where(
        Message.conversation_id == bindparam("c"), or_(Message.content != "", Message.status == "streaming")
    )
    .order_by(Message.seq.desc())
    .limit(MAX_TURNS + 1)
)
ADD = insert(Message)
TOUCH = update(Conversation).where(Conversation.id == bindparam("c")).values(updated_at=bindparam("now"))
TITLE = (
    update(Conversation)
    .where(Conversation.id == bindparam("c"))
    .values(updated_at=bindparam("now"), title=bindparam("t"))
)


def start(
    db: sessionmaker[Session],
    conversation_id: str,
    owner: str | None,
    parse: Callable[[Any], ChatRequest],
    stale_after: timedelta,
    writer: str,
) -> tuple[Turn, ChatRequest]:
    """Start a turn in the owner's conversation: the chat ``parse`` makes of the body with the
    conversation's defaults, its user message stored with an empty reply that ``writer`` writes;
    the turn, and the chat with its history. A 404 for anyone else's conversation.

    One transaction, the conversation locked: two turns at once cannot both start (409).
    Plain statements rather than the ORM's unit of work: this is on every turn's way to its
    first byte.
    """
    if ID.fullmatch(conversation_id) is None:
        raise not_found()  # no id looks like that: spare the database the lookup
    key = {"c": conversation_id}
    with transaction(db) as sql:  # Core statements: no unit of work to run
        # The conversation locked first, then the replies being written read after the lock:
        # under Postgres's READ COMMITTED one statement doing both would, after waiting for
        # the lock, not see the reply the turn before it just stored.
        conversation = sql.execute(LOCK, key).first()
        if conversation is None or conversation.owner != owner:
            raise not_found()
        chat = parse(conversation)  # a bad body is a 400 here, and nothing is stored
        rows = sql.execute(HISTORY, key).all()
        running = [row[2:] for row in rows if row.status == "streaming"]
        if not all(is_abandoned(*row, stale_after) for row in running):
            raise Busy("A reply in this conversation is still being written; wait for it to finish.")
        if running:  # their workers died
            sql.execute(INTERRUPT, key)
        history = [{"role": row.role, "content": row.content} for row in reversed(rows) if row.content]
        history = history[-MAX_TURNS:]
        message = chat.messages[-1]["content"]
        now = utcnow()
        user = message_row(conversation_id, "user", "complete", now, content=message)
        reply = message_row(conversation_id, "assistant", "streaming", now, model=chat.model, writer=writer)
        sql.execute(ADD, [user, reply])
        if conversation.title:
            sql.execute(TOUCH, {**key, "now": now})
        else:
            sql.execute(TITLE, {**key, "now": now, "t": title_from(message)})
    return Turn(conversation_id, reply["id"]), dataclasses.replace(chat, messages=(*history, *chat.messages))


def message_row(conversation_id: str, role: str, status: str, now: datetime, **values: Any) -> dict[str, Any]:
    """A new message's columns, its id made here."""
    return {
        "id": new_id(),
        "conversation_id": conversation_id,
        "role": role,
        "status": status,
        "content": "",
        "model": None,
        "writer": None,  # every row of one insert names the same columns
        "created_at": now,
        "updated_at": now,
        **values,
    }


def title_from(message: str) -> str:
    """The message's opening words, at most TITLE_WORDS_CHARS characters."""
    words = message.split()
    title = ""
    for word in words:
        if len(title) + len(word) + 1 > TITLE_WORDS_CHARS:
            break
        title = f"{title} {word}" if title else word
    return title or words[0][:TITLE_WORDS_CHARS]
