"""The chat routes: parse the request, ask the model, relay the reply."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, after_this_request, current_app, g, request

from . import turns
from .body import read_body
from .guards import on_close
from .relay import Relay
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
    if g.get("turn"):
        answer.update(conversation_id=g.turn.conversation_id, message_id=g.turn.reply_id)
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


def start_relay(framing: str) -> Relay:
    """Check the body, store the user's turn if in a conversation, open the model's stream,
    and wait for its first delta."""
    config = current_app.config
    body = read_json(read_body(), request.mimetype)
    conversation_id = conversation_ref(body)
    db = current_app.extensions["db"]
    conversation = None if conversation_id is None else turns.find(db, conversation_id, g.get("owner"))
    chat = parse_chat(body, config, conversation)
    turn = None
    if conversation is not None:
        turn, chat = turns.start(db, conversation, chat, stale_after=config["UPSTREAM_TIMEOUT_S"])
        g.turn = turn
    g.model = chat.model
    llm = current_app.extensions["llm"]
    g.upstream_started = time.perf_counter()
    metadata: dict[str, Any] = {
        "request_id": g.request_id,
        "model": chat.model,
        "conversation_id": turn.conversation_id if turn else None,
        "message_id": turn.reply_id if turn else None,
    }
    relay = g.relay = Relay(
        llm.stream(chat),
        started=g.started,
        framing=framing,
        ping_s=config["SSE_PING_S"],
        metadata=metadata,
        on_end=turn.record if turn else None,
        write_timeout_s=config["CLIENT_WRITE_TIMEOUT_S"],
    )
    after_this_request(on_close(relay.close))  # a JSON reply is written after the view: watched until then
    if turn is not None:
        turn.keep_alive()  # from here on, the relay stores the reply however it ends
    # Hang up on the model as soon as the client hangs up (gunicorn only hands out its socket).
    watched = request.environ.get("gunicorn.socket")
    relay.open(None if framing == "json" else config["FIRST_DELTA_WAIT_S"], watched)
    return relay
