"""The chat routes: parse the request, ask the model, relay the reply."""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Blueprint, Response, after_this_request, current_app, g, request

from .body import read_body
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


def start_relay(framing: str) -> Relay:
    """Check the body, open the model's stream, and wait for its first delta."""
    body = read_json(read_body(), request.mimetype)
    chat = parse_chat(body, current_app.config)
    g.model = chat.model
    llm = current_app.extensions["llm"]
    g.upstream_started = time.perf_counter()
    config = current_app.config
    relay = g.relay = Relay(
        llm.stream(chat),
        started=g.started,
        framing=framing,
        ping_s=config["SSE_PING_S"],
        write_timeout_s=config["CLIENT_WRITE_TIMEOUT_S"],
    )
    after_this_request(closes(relay))  # a JSON reply is written after the view: watched until then
    client = request.environ.get("gunicorn.socket")
    if client is not None:
        relay.watch(client)
    relay.open()
    return relay


def closes(relay: Relay) -> Callable[[Response], Response]:
    """An after-request function that closes ``relay`` when the response does."""

    def close_with(response: Response) -> Response:
        response.call_on_close(relay.close)
        return response

    return close_with
