"""The chat routes: parse the request, ask the model, relay the reply."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from .relay import Relay
from .validation import parse_chat, read_json

bp = Blueprint("chat", __name__, url_prefix="/api")

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@bp.post("/chat")
def chat() -> dict[str, object]:
    """Answer with the whole reply as JSON."""
    relay = start_relay("json")
    reply = relay.text()
    g.server_timing = f"upstream;dur={(time.perf_counter() - g.upstream_started) * 1000.0:.1f}"
    return {
        "reply": reply,
        "model": g.model,
        "usage": relay.usage.as_dict() if relay.usage else None,
        "request_id": g.request_id,
    }


@bp.post("/chat/stream")
def chat_stream() -> Response:
    """Answer with the reply's text (or as Server-Sent Events), each delta sent as it arrives."""
    sse = "text/event-stream" in request.headers.get("Accept", "")
    relay = start_relay("sse" if sse else "text")
    return Response(relay, mimetype="text/event-stream" if sse else "text/plain", headers=STREAM_HEADERS)


def read_body() -> bytes:
    """The request body, or a 413 when it is over the limit, whether or not it is chunked."""
    data = request.get_data(cache=False)
    # A chunked body is cut at the limit without a word: one more byte tells.
    if len(data) >= (current_app.config["MAX_CONTENT_LENGTH"] or 0) and request.stream.read(1):
        raise RequestEntityTooLarge()
    return data


def start_relay(framing: str) -> Relay:
    """Check the body, open the model's stream, and wait for its first delta."""
    body = read_json(read_body(), request.mimetype)
    chat = parse_chat(body, current_app.config)
    g.model = chat.model
    llm = current_app.extensions["llm"]
    g.upstream_started = time.perf_counter()
    config = current_app.config
    metadata = {"request_id": g.request_id, "model": chat.model, "conversation_id": None, "message_id": None}
    relay = g.relay = Relay(
        llm.stream(chat), started=g.started, framing=framing, ping_s=config["SSE_PING_S"], metadata=metadata
    )
    client = request.environ.get("gunicorn.socket")
    if client is not None:
        relay.watch(client)
    relay.open(None if framing == "json" else config["FIRST_DELTA_WAIT_S"])
    return relay
