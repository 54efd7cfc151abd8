"""A conversation turn's storage at its start: the user's message, stored before the model is called,
and the reply's row, marked as being written by this worker. The reply itself is written,
checkpointed and stored by ``app.replies``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from .db import reading
from .errors import ApiError
from .models import ID_LENGTH, Conversation, Message, new_id, utcnow
from .replies.store import is_abandoned
from .validation import MAX_TURNS, ChatRequest

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


def start(
    db: sessionmaker[Session],
    conversation: Conversation,
    chat: ChatRequest,
    stale_after: timedelta,
    writer: str,
) -> tuple[Turn, ChatRequest]:
    """Store the user's message and an empty reply that ``writer`` writes; the turn, and the chat
    with its history.

    One transaction, the conversation locked: two turns at once cannot both start (409).
    Plain statements rather than the ORM's unit of work: this is on every turn's way to its
    first byte.
    """
    message = chat.messages[-1]["content"]
    now = utcnow()
    user = message_row(conversation.id, "user", "complete", now, content=message)
    reply = message_row(conversation.id, "assistant", "streaming", now, model=chat.model, writer=writer)
    with db.begin() as session:
        sql = session.connection()  # Core statements: no unit of work to run
        # The conversation locked first, then the replies being written read after the lock:
        # under Postgres's READ COMMITTED one statement doing both would, after waiting for
        # the lock, not see the reply the turn before it just stored.
        title = sql.execute(
            select(Conversation.title).where(Conversation.id == conversation.id).with_for_update()
        ).first()
        if title is None:
            raise not_found()  # deleted since it was looked up
        running = sql.execute(
            select(Message.status, Message.writer, Message.updated_at).where(
                Message.conversation_id == conversation.id, Message.status == "streaming"
            )
        ).all()
        if not all(is_abandoned(*row, stale_after) for row in running):
            raise Busy("A reply in this conversation is still being written; wait for it to finish.")
        if running:  # their workers died
            sql.execute(
                update(Message)
                .where(Message.conversation_id == conversation.id, Message.status == "streaming")
                .values(status="interrupted")
            )
        # Only the newest reply can be resumed from an event id: the older ones' events go.
        sql.execute(
            update(Message)
            .where(Message.conversation_id == conversation.id, Message.events.is_not(None))
            .values(events=None)
        )
        history = load_history(sql, conversation.id)
        sql.execute(insert(Message), [user, reply])
        changes: dict[str, Any] = {"updated_at": now}
        if not title[0]:
            changes["title"] = title_from(message)
        sql.execute(update(Conversation).where(Conversation.id == conversation.id).values(**changes))
    return Turn(conversation.id, reply["id"]), dataclasses.replace(chat, messages=(*history, *chat.messages))


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


def load_history(sql: Connection, conversation_id: str) -> Sequence[dict[str, str]]:
    """The stored turns the model is shown, oldest first: the newest MAX_TURNS, none without text."""
    rows = sql.execute(
        select(Message.role, Message.content)
        .where(Message.conversation_id == conversation_id, Message.content != "")
        .order_by(Message.seq.desc())
        .limit(MAX_TURNS)
    ).all()
    return [{"role": role, "content": content} for role, content in reversed(rows)]


def title_from(message: str) -> str:
    """The message's opening words, at most TITLE_WORDS_CHARS characters."""
    words = message.split()
    title = ""
    for word in words:
        if len(title) + len(word) + 1 > TITLE_WORDS_CHARS:
            break
        title = f"{title} {word}" if title else word
    return title or words[0][:TITLE_WORDS_CHARS]
