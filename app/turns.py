"""A conversation turn's storage: the user's message before the model is called, the reply after.

The database is touched when a turn starts, when its reply ends, and by a heartbeat every
third of UPSTREAM_TIMEOUT_S while the reply is written; never per delta. A reply whose
worker died stops beating and reads as ``interrupted`` once UPSTREAM_TIMEOUT_S has passed.
"""

from __future__ import annotations

import _thread
import dataclasses
import logging
import re
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from .db import reading
from .errors import ApiError
from .models import ID_LENGTH, Conversation, Message, new_id, utcnow
from .validation import MAX_TURNS, ChatRequest

if TYPE_CHECKING:
    from .relay import Relay

log = logging.getLogger(__name__)

TITLE_WORDS_CHARS = 60
ID = re.compile(rf"[A-Za-z0-9_-]{{{ID_LENGTH}}}")  # what new_id() makes
STATUS_OF_OUTCOME = {"complete": "complete", "error": "error", "disconnected": "stopped"}


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


def is_stale(message: Message, now: datetime, stale_after: timedelta) -> bool:
    """A reply still marked as being written whose worker has not beaten for too long."""
    return message.status == "streaming" and message.updated_at < now - stale_after


class Turn:
    """One turn in flight: its ids, and the one place its reply gets stored."""

    def __init__(self, db: sessionmaker[Session], conversation_id: str, reply_id: str, beat_s: float) -> None:
        self.db = db
        self.conversation_id = conversation_id
        self.reply_id = reply_id
        self.beat_s = beat_s
        self._over = threading.Event()

    def record(self, relay: Relay) -> None:
        """Store how the reply ended and its text (the relay's ``on_end``)."""
        self._over.set()
        now = utcnow()
        usage = relay.usage
        with self.db.begin() as session:
            sql = session.connection()
            sql.execute(
                update(Message)
                .where(Message.id == self.reply_id)
                .values(
                    content=relay.reply_text().replace("\x00", "\ufffd"),  # Postgres stores no NUL
                    status=STATUS_OF_OUTCOME.get(relay.outcome, "error"),
                    input_tokens=usage.input_tokens if usage else None,
                    output_tokens=usage.output_tokens if usage else None,
                    updated_at=now,
                )
            )
            sql.execute(
                update(Conversation).where(Conversation.id == self.conversation_id).values(updated_at=now)
            )

    def keep_alive(self) -> None:
        """Beat until the reply is stored, in a thread of its own (a greenlet under gevent)."""
        _thread.start_new_thread(self._beat, ())

    def _beat(self) -> None:
        while not self._over.wait(self.beat_s):
            try:
                with self.db.begin() as session:
                    session.execute(
                        update(Message)
                        .where(Message.id == self.reply_id, Message.status == "streaming")
                        .values(updated_at=utcnow())
                    )
            except SQLAlchemyError as error:  # a busy or unreachable database: try at the next beat
                log.warning("could not mark reply %s as alive: %s", self.reply_id, type(error).__name__)


def start(
    db: sessionmaker[Session], conversation: Conversation, chat: ChatRequest, stale_after: float
) -> tuple[Turn, ChatRequest]:
    """Store the user's message and an empty reply being written; the turn, and the chat with history.

    One transaction, the conversation locked: two turns at once cannot both start (409).
    Plain statements rather than the ORM's unit of work: this is on every turn's way to its
    first byte.
    """
    message = chat.messages[-1]["content"]
    now = utcnow()
    user = message_row(conversation.id, "user", "complete", now, content=message)
    reply = message_row(conversation.id, "assistant", "streaming", now, model=chat.model)
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
        beats = sql.scalars(
            select(Message.updated_at).where(
                Message.conversation_id == conversation.id, Message.status == "streaming"
            )
        ).all()
        if any(beat >= now - timedelta(seconds=stale_after) for beat in beats):
            raise Busy("A reply in this conversation is still being written; wait for it to finish.")
        if beats:  # their workers died
            sql.execute(
                update(Message)
                .where(Message.conversation_id == conversation.id, Message.status == "streaming")
                .values(status="interrupted")
            )
        history = load_history(sql, conversation.id)
        sql.execute(insert(Message), [user, reply])
        changes: dict[str, Any] = {"updated_at": now}
        if not title[0]:
            changes["title"] = title_from(message)
        sql.execute(update(Conversation).where(Conversation.id == conversation.id).values(**changes))
    turn = Turn(db, conversation.id, reply["id"], beat_s=stale_after / 3)
    return turn, dataclasses.replace(chat, messages=(*history, *chat.messages))


def message_row(conversation_id: str, role: str, status: str, now: datetime, **values: Any) -> dict[str, Any]:
    """A new message's columns, its id made here."""
    return {
        "id": new_id(),
        "conversation_id": conversation_id,
        "role": role,
        "status": status,
        "content": "",
        "model": None,
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
