"""The conversation routes: create, list, read, update and delete conversations kept on the server."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, Response, current_app, g, request
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from . import turns
from .body import read_body
from .db import reading
from .errors import ApiError
from .models import Conversation, Message, utcnow
from .validation import parse_conversation, read_json

bp = Blueprint("conversations", __name__, url_prefix="/api/conversations")

PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
CURSOR = re.compile(r"[0-9]{1,19}\.[A-Za-z0-9_-]{1,64}")  # any such text is a place in the list
EPOCH = datetime(1970, 1, 1)
LAST_MICROS = (datetime.max - EPOCH) // timedelta(microseconds=1)


@bp.post("")
def create() -> tuple[dict[str, Any], int, dict[str, str]]:
    """Start a conversation, with defaults for its turns."""
    fields = parse_conversation(read_json(read_body(), request.mimetype), current_app.config)
    conversation = Conversation(owner=owner(), **fields)
    with db().begin() as session:
        session.add(conversation)
    return as_json(conversation), 201, {"Location": f"{bp.url_prefix}/{conversation.id}"}


@bp.get("")
def index() -> dict[str, Any]:
    """The owner's conversations, most recently active first, a page at a time."""
    limit = page_size(request.args.get("limit"))
    query = select(Conversation).where(Conversation.owner == owner())  # IS NULL without keys
    before = request.args.get("before")
    if before is not None:
        updated_at, conversation_id = read_cursor(before)
        query = query.where(
            or_(
                Conversation.updated_at < updated_at,
                and_(Conversation.updated_at == updated_at, Conversation.id < conversation_id),
            )
        )
    query = query.order_by(Conversation.updated_at.desc(), Conversation.id.desc()).limit(limit + 1)
    with reading(db()) as session:
        found = list(session.scalars(query))
    page, more = found[:limit], len(found) > limit
    return {
        "conversations": [as_json(conversation) for conversation in page],
        "next": cursor(page[-1]) if more else None,
    }


@bp.get("/<conversation_id>")
def show(conversation_id: str) -> dict[str, Any]:
    """One conversation with its messages, oldest first."""
    conversation = find(conversation_id)
    with reading(db()) as session:
        messages = session.scalars(
            select(Message).where(Message.conversation_id == conversation.id).order_by(Message.seq)
        ).all()
    stale_after, now = timedelta(seconds=current_app.config["UPSTREAM_TIMEOUT_S"]), utcnow()
    return {
        **as_json(conversation),
        "messages": [
            message_json(message, turns.is_stale(message, now, stale_after)) for message in messages
        ],
    }


@bp.patch("/<conversation_id>")
def edit(conversation_id: str) -> dict[str, Any]:
    """Change a conversation's title, instructions or model."""
    fields = parse_conversation(read_json(read_body(), request.mimetype), current_app.config)
    conversation = find(conversation_id)
    with db().begin() as session:
        # One statement on the row as it is now: a turn may have titled it, or a DELETE
        # removed it, since it was looked up.
        changed = session.scalars(
            update(Conversation)
            .where(Conversation.id == conversation.id, Conversation.owner == owner())
            .values(**fields, updated_at=utcnow())
            .returning(Conversation)
        ).first()
        if changed is None:
            raise turns.not_found()
        return as_json(changed)


@bp.delete("/<conversation_id>")
def remove(conversation_id: str) -> Response:
    """Delete a conversation and its messages."""
    conversation = find(conversation_id)
    with db().begin() as session:
        session.execute(delete(Message).where(Message.conversation_id == conversation.id))
        session.execute(delete(Conversation).where(Conversation.id == conversation.id))
    return Response(status=204)


def db() -> sessionmaker[Session]:
    return current_app.extensions["db"]  # type: ignore[no-any-return]


def owner() -> str | None:
    """Whose conversations these are: the API key's id, or None when the service has no keys."""
    owner: str | None = g.get("owner")
    return owner


def find(conversation_id: str) -> Conversation:
    return turns.find(db(), conversation_id, owner())


def page_size(value: str | None) -> int:
    if value is None:
        return PAGE_SIZE
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= MAX_PAGE_SIZE:
        raise ApiError(f"'limit' must be a whole number from 1 to {MAX_PAGE_SIZE}.")
    return int(value)


def cursor(conversation: Conversation) -> str:
    """Where the next page starts: after this conversation (its time in microseconds, and its id)."""
    micros = (conversation.updated_at - EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{conversation.id}"


def read_cursor(value: str) -> tuple[datetime, str]:
    if CURSOR.fullmatch(value) is None:
        raise ApiError("'before' must be the 'next' value of an earlier page.")
    micros, _, conversation_id = value.partition(".")
    return EPOCH + timedelta(microseconds=min(int(micros), LAST_MICROS)), conversation_id


def timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC, to the millisecond."""
    return moment.isoformat(timespec="milliseconds") + "Z"


def as_json(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "title": conversation.title,
        "instructions": conversation.instructions,
        "model": conversation.model,
        "created_at": timestamp(conversation.created_at),
        "updated_at": timestamp(conversation.updated_at),
    }


def message_json(message: Message, stale: bool) -> dict[str, Any]:
    usage = None
    if message.input_tokens is not None and message.output_tokens is not None:
        usage = {"input_tokens": message.input_tokens, "output_tokens": message.output_tokens}
    return {
        "id": message.id,
        "role": message.role,
        "content": message.content,
        "status": "interrupted" if stale else message.status,
        "model": message.model,
        "usage": usage,
        "created_at": timestamp(message.created_at),
    }
