"""What is stored: conversations and their messages (SQLAlchemy 2 models)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ID_LENGTH = 22  # secrets.token_urlsafe(16): 128 random bits, URL-safe
TITLE_CHARS = 200
WRITER_CHARS = 100  # host name and process id of the worker writing a reply


def new_id() -> str:
    """An id nobody can guess or count on: 128 random bits (never starting with "-", which a
    command line would take for an option)."""
    while (made := secrets.token_urlsafe(16)).startswith("-"):
        pass
    return made


def utcnow() -> datetime:
    """Now, in UTC, without a zone: both databases store it the same way."""
    return datetime.now(UTC).replace(tzinfo=None)


def as_created(context: Any) -> datetime:
    """A new row's ``updated_at``: the same moment as its ``created_at``, not a second reading."""
    return context.get_current_parameters()["created_at"]  # type: ignore[no-any-return]


class Base(DeclarativeBase):
    pass


class Conversation(Base):
    """A conversation: its defaults for turns, and whom it belongs to."""

    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    # Which API key created it, as the one-way id derived from the key; None without API_KEYS.
    owner: Mapped[str | None] = mapped_column(String(64))
    title: Mapped[str | None] = mapped_column(String(TITLE_CHARS))
    instructions: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=as_created)

    __table_args__ = (Index("ix_conversations_owner_updated", "owner", "updated_at", "id"),)


class Message(Base):
    """One turn: the user's message, or the assistant's reply and how it ended."""

    __tablename__ = "messages"

    # Insertion order, for "oldest first"; never shown (the public id is random).
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    id: Mapped[str] = mapped_column(String(ID_LENGTH), unique=True, default=new_id)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text, default="")
    # complete, streaming, stopped, error or interrupted
    status: Mapped[str] = mapped_column(String(16))
    model: Mapped[str | None] = mapped_column(String(200))
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # While streaming, the reply's heartbeat: a reply whose worker died stops beating.
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=as_created)
    # A reply's life as the server writes it (see app/replies): who writes it, its reasoning
    # text, how many events it has had, and where each one lies in the two texts.
    writer: Mapped[str | None] = mapped_column(String(WRITER_CHARS))
    reasoning: Mapped[str | None] = mapped_column(Text)
    last_event: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    events: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)  # the sentence a failed reply's readers got
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
