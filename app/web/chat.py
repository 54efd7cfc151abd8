"""The chat routes: parse the request, ask the model, relay the reply."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, after_this_request, current_app, g, request

from ..guards import keep_slot, on_close
from ..relay.relay import Relay
from ..replies.reader import Reader
from ..store import turns
from ..store.writers import worker_id
from .body import read_body
from .validation import conversation_ref, parse_chat, read_json

bp = Blueprint("chat", __name__, url_prefix="/api")

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@bp.post("/chat")
def chat() -> dict[str, object]:
    """Answer with the whole reply as JSON."""
    relay = start_relay("json")
    reply = relay.text()
    g.server_timing = f"upstream;dur={(time.perf_counter() - g.upstream_started) * 1000.0:.1f}"
    answer: dict[str, object] = {
        "reply": reply,
        "model": g.model,
        "usage": relay.usage.as_dict() if relay.usage else None,
        "request_id": g.request_id,
    }
    if isinstance(relay, Reader):
        answer.update(conversation_id=g.turn.conversation_id, message_id=g.turn.reply_id, status=relay.status)
    return answer


@bp.post("/chat/stream")
def chat_stream() -> Response:
    """Answer with the reply's text (or as Server-Sent Events), each delta sent as it arrives."""
    sse = "text/event-stream" in request.headers.get("Accept", "")
    relay = start_relay("sse" if sse else "text")
    return Response(relay, mimetype="text/event-stream" if sse else "text/plain", headers=STREAM_HEADERS)


@bp.after_request
def name_the_turn(response: Response) -> Response:
    """Tell a conversation's client which conversation and stored reply this is, whatever the status."""
    turn = g.get("turn")
    if turn is not None:
        response.headers["X-Conversation-ID"] = turn.conversation_id
        response.headers["X-Message-ID"] = turn.reply_id
    return response


def start_relay(framing: str) -> Relay | Reader:
    """Check the body and open the model's stream (in a conversation, start the turn's reply), and
    wait for its first delta."""
    config = current_app.config
    body = read_json(read_body(), request.mimetype)
    conversation_id = conversation_ref(body)
    g.upstream_started = time.perf_counter()
    if conversation_id is not None:
        return start_turn(conversation_id, body, framing)
    chat = parse_chat(body, config)
    g.model = chat.model
    metadata = {"request_id": g.request_id, "model": chat.model, "conversation_id": None, "message_id": None}
    relay = g.relay = Relay(
        current_app.extensions["llm"].stream(chat),
        started=g.started,
        framing=framing,
        ping_s=config["SSE_PING_S"],
        metadata=metadata,
        write_timeout_s=config["CLIENT_WRITE_TIMEOUT_S"],
    )
    after_this_request(on_close(relay.close))  # a JSON reply is written after the view: watched until then
    # Hang up on the model as soon as the client hangs up (gunicorn only hands out its socket).
    relay.open(
        None if framing == "json" else config["FIRST_DELTA_WAIT_S"], request.environ.get("gunicorn.socket")
    )
    return relay


def start_turn(conversation_id: str, body: Any, framing: str) -> Reader:
    """Store the user's message, start the reply as the server's own work, and read it: the
    response is the reply's first reader, and its client leaving changes nothing (unless
    REPLY_ON_DISCONNECT is ``stop``)."""
    config = current_app.config
    replies = current_app.extensions["replies"]
    turn, chat = turns.start(
        current_app.extensions["db"],
        conversation_id,
        g.get("owner"),
        lambda conversation: parse_chat(body, config, conversation),
        replies.stale_after,
        worker_id(),
    )
    g.turn, g.model = turn, chat.model
    job = replies.start(
        turn.conversation_id, turn.reply_id, current_app.extensions["llm"].stream(chat), keep_slot()
    )
    reader = g.relay = Reader(
        job.log,
        g.started,
        framing=framing,
        metadata={
            "request_id": g.request_id,
            "model": chat.model,
            "conversation_id": turn.conversation_id,
            "message_id": turn.reply_id,
        },
        ping_s=config["SSE_PING_S"],
        write_timeout_s=config["CLIENT_WRITE_TIMEOUT_S"],
        catch_up=False,  # the turn's own reader gets every event as the model wrote it
        on_leave=job.stop if config["REPLY_ON_DISCONNECT"] == "stop" else None,
    )
    after_this_request(on_close(reader.close))
    reader.open(
        None if framing == "json" else config["FIRST_DELTA_WAIT_S"], request.environ.get("gunicorn.socket")
    )
    return reader
