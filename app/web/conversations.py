"""The conversation routes: create, list, read, update and delete conversations kept on the server;
follow the reply being written in one, and stop it, from any worker or host."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, Response, after_this_request, current_app, g, request
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from ..errors import ApiError
from ..guards import on_close
from ..replies import store
from ..replies.log import INTERRUPTED
from ..replies.reader import Reader
from ..replies.worker import Replies
from ..store import turns, writers
from ..store.db import reading
from ..store.models import Conversation, Message, utcnow
from .body import read_body
from .validation import parse_conversation, read_json

bp = Blueprint("conversations", __name__, url_prefix="/api/conversations")

PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
CURSOR = re.compile(r"[0-9]{1,19}\.[A-Za-z0-9_-]{1,64}")  # any such text is a place in the list
EPOCH = datetime(1970, 1, 1)
LAST_MICROS = (datetime.max - EPOCH) // timedelta(microseconds=1)
EVENT_ID = re.compile(r"[0-9]{1,18}")
RESUMABLE_FOR = timedelta(seconds=60)  # an ended reply's events can be resumed this long after its end
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


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
        running = replying(session, [conversation.id for conversation in page])
    return {
        "conversations": [as_json(conversation, conversation.id in running) for conversation in page],
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
    abandoned = [lost(message) for message in messages]
    return {
        **as_json(conversation, any(m.status == "streaming" for m in messages) and not any(abandoned)),
        "messages": [message_json(message, gone) for message, gone in zip(messages, abandoned, strict=True)],
    }


@bp.get("/<conversation_id>/stream")
def follow(conversation_id: str) -> Response:
    """Follow the reply being written in the conversation, from the event the client names."""
    conversation = find(conversation_id)
    after = event_cursor()
    reply = store.latest_reply(db(), conversation.id)
    # A client resuming names the reply its event ids belong to: a newer one is not it.
    named = request.args.get("reply")
    if reply is None or (named is not None and named != reply.id) or not resumable(reply, after):
        return Response(status=204)
    log, detach = replies().attach(reply)
    sse = "text/event-stream" in request.headers.get("Accept", "")
    reader = g.relay = Reader(
        log,
        g.started,
        framing="sse" if sse else "text",
        after=after or 0,
        metadata={
            "request_id": g.request_id,
            "model": reply.model,
            "conversation_id": conversation.id,
            "message_id": reply.id,
        },
        ping_s=current_app.config["SSE_PING_S"],
        write_timeout_s=current_app.config["CLIENT_WRITE_TIMEOUT_S"],
        on_close=detach,
    )
    after_this_request(on_close(reader.close))
    reader.open(None, request.environ.get("gunicorn.socket"))
    headers = {**STREAM_HEADERS, "X-Conversation-ID": conversation.id, "X-Message-ID": reply.id}
    return Response(reader, mimetype="text/event-stream" if sse else "text/plain", headers=headers)


@bp.post("/<conversation_id>/stop")
def stop(conversation_id: str) -> Response | dict[str, Any]:
    """Stop the reply being written in the conversation, wherever it is written; the stored message."""
    conversation = find(conversation_id)
    reply = store.latest_reply(db(), conversation.id)
    if reply is None or reply.status != "streaming" or replies().abandoned(reply):
        return Response(status=204)  # nothing is being written: stopping twice is harmless
    replies().stop_anywhere(reply)
    with reading(db()) as session:
        message = session.scalars(select(Message).where(Message.id == reply.id)).first()
    if message is None:
        raise turns.not_found()  # deleted meanwhile
    return message_json(message, False)


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


def replies() -> Replies:
    return current_app.extensions["replies"]  # type: ignore[no-any-return]


def lost(message: Message) -> bool:
    """Is ``message`` a reply still marked as being written whose worker is gone?"""
    return writers.is_abandoned(message.status, message.writer, message.updated_at, replies().stale_after)


def replying(session: Session, conversation_ids: list[str]) -> set[str]:
    """Which of these conversations have a reply being written now."""
    if not conversation_ids:
        return set()
    rows = session.execute(
        select(Message.conversation_id, Message.status, Message.writer, Message.updated_at).where(
            Message.conversation_id.in_(conversation_ids), Message.status == "streaming"
        )
    ).all()
    stale_after = replies().stale_after
    return {row[0] for row in rows if not writers.is_abandoned(*row[1:], stale_after)}


def event_cursor() -> int | None:
    """The event a reader resumes after: ``Last-Event-ID``, else ``?after=``; None for neither."""
    value = request.headers.get("Last-Event-ID")
    if value is None:
        value = request.args.get("after")
    if value is None or value == "":
        return None
    if EVENT_ID.fullmatch(value) is None:
        raise ApiError(
            "'Last-Event-ID' (or 'after') must be the id of an event of the reply, a whole number."
        )
    return int(value)


def resumable(reply: store.Stored, after: int | None) -> bool:
    """Is there anything to send a reader of ``reply`` who has the events up to ``after``?

    A reply being written: yes. One that has ended: only to a reader that names one of its
    events but the last, at most RESUMABLE_FOR after its end (a reader that lost its
    connection just before the end gets the rest).
    """
    if reply.status == "streaming" and not replies().abandoned(reply):
        return True
    if after is None or after < 1 or reply.events is None:
        return False
    reply = store.read(db(), reply.id) or reply  # as stored at its end
    return after <= reply.last_event and reply.updated_at >= utcnow() - RESUMABLE_FOR


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


def as_json(conversation: Conversation, streaming: bool = False) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "title": conversation.title,
        "instructions": conversation.instructions,
        "model": conversation.model,
        "created_at": timestamp(conversation.created_at),
        "updated_at": timestamp(conversation.updated_at),
        "streaming": streaming,  # a reply is being written in it now
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
        "error": message.error or (INTERRUPTED if stale else None),
        "reasoning": message.reasoning,
        "created_at": timestamp(message.created_at),
    }
