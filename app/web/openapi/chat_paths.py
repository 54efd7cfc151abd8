"""``POST /api/chat`` and ``POST /api/chat/stream``: one request body, a whole or a streamed reply."""

from __future__ import annotations

from typing import Any

from .responses import (
    BODY_LATE,
    BODY_TOO_LARGE,
    DENIED,
    PLAIN_OR_EVENTS,
    SECURITY,
    error_response,
    json_of,
    ref,
    throttled,
)

REQUEST_ID = {
    "X-Request-ID": {
        "description": "The request's id (kept from the request if given)",
        "schema": {"type": "string"},
    }
}


def paths() -> dict[str, Any]:
    """The two chat routes."""
    return {
        "/api/chat": {"post": chat_operation("Get a whole reply", whole_reply())},
        "/api/chat/stream": {"post": chat_operation("Stream a reply", streamed_reply())},
    }


def whole_reply() -> dict[str, Any]:
    """The 200 of ``/api/chat``: the reply as one JSON body."""
    return {"description": "The whole reply", "content": json_of(ref("Reply")), "headers": REQUEST_ID}


def streamed_reply() -> dict[str, Any]:
    """The 200 of ``/api/chat/stream``: the reply as it is written."""
    return {
        "description": "The reply's text as it is written; a failure after the start ends it with "
        "'\\n[error: <reason>]' (with Accept: text/event-stream: metadata, then token and reasoning, "
        "then done or error events; in a conversation turn each event after metadata has an id:)",
        "content": PLAIN_OR_EVENTS,
        "headers": {
            **REQUEST_ID,
            "X-Conversation-ID": {"description": "The conversation, in a turn", "schema": {"type": "string"}},
            "X-Message-ID": {"description": "The stored reply, in a turn", "schema": {"type": "string"}},
        },
    }


def chat_operation(summary: str, ok: dict[str, Any]) -> dict[str, Any]:
    """A chat route: the same body and failures, whichever way the reply is sent."""
    limited = throttled(
        "Over the rate limit (ours or the model provider's), too many replies in flight, or too many "
        "failed authentications from this address; see Retry-After"
    )
    return {
        "summary": summary,
        "security": SECURITY,
        "requestBody": {"required": True, "content": json_of(ref("ChatRequest"))},
        "responses": {
            "200": ok,
            "400": error_response("The body is not valid: the sentence names the field"),
            "401": DENIED,
            "408": BODY_LATE,
            "404": error_response("No conversation with that 'conversation_id' (for this API key)"),
            "409": error_response("A reply in that conversation is still being written"),
            "413": BODY_TOO_LARGE,
            "429": limited,
            "502": error_response("The model provider refused, rejected our key, or broke"),
            "504": error_response("The model provider went silent for too long"),
        },
    }
