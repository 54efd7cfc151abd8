"""The conversation routes: each operation is named after the view in ``app/web/conversations.py``."""

from __future__ import annotations

from typing import Any

from ..conversations import CURSOR
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

CONVERSATION_ID = {"name": "conversation_id", "in": "path", "required": True, "schema": {"type": "string"}}
EVENT_ID = {"type": "string", "pattern": "^[0-9]{1,18}$"}
EDIT_BODY = {"required": True, "content": json_of(ref("ConversationFields"))}
BAD = error_response("The body or a parameter is not valid: the sentence names it")
UNKNOWN = error_response("No conversation with that id (for this API key)")
LIMITED = throttled("Too many failed authentications from this address; see Retry-After")


def paths() -> dict[str, Any]:
    """Create, list, read, update and delete stored conversations."""
    return {
        "/api/conversations": {"post": create(), "get": index()},
        "/api/conversations/{conversation_id}": {
            "parameters": [CONVERSATION_ID],
            "get": show(),
            "patch": edit(),
            "delete": remove(),
        },
        **reply_paths(),
    }


def reply_paths() -> dict[str, Any]:
    """Follow and stop the reply being written in a conversation, from any worker or host."""
    return {
        "/api/conversations/{conversation_id}/stream": {"parameters": [CONVERSATION_ID], "get": follow()},
        "/api/conversations/{conversation_id}/stop": {"parameters": [CONVERSATION_ID], "post": stop()},
    }


def create() -> dict[str, Any]:
    """``POST /api/conversations``."""
    created = {
        "description": "Created",
        "headers": {"Location": {"schema": {"type": "string"}}},
        "content": json_of(ref("Conversation")),
    }
    return {
        "security": SECURITY,
        "summary": "Start a conversation",
        "requestBody": EDIT_BODY,
        "responses": {
            "201": created,
            "400": BAD,
            "401": DENIED,
            "408": BODY_LATE,
            "413": BODY_TOO_LARGE,
            "429": LIMITED,
        },
    }


def index() -> dict[str, Any]:
    """``GET /api/conversations``: a page at a time."""
    limit = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}
    before = {
        "name": "before",
        "in": "query",
        "schema": {"type": "string", "pattern": f"^{CURSOR.pattern}$"},
        "description": "The 'next' value of the page before",
    }
    page = {
        "description": "A page; 'next' fetches the following one",
        "content": json_of(ref("ConversationPage")),
    }
    return {
        "security": SECURITY,
        "summary": "Conversations, most recently active first",
        "parameters": [limit, before],
        "responses": {"200": page, "400": BAD, "401": DENIED, "429": LIMITED},
    }


def show() -> dict[str, Any]:
    """``GET /api/conversations/{conversation_id}``."""
    found = {"description": "The conversation", "content": json_of(ref("ConversationWithMessages"))}
    return {
        "security": SECURITY,
        "summary": "A conversation and its messages, oldest first",
        "responses": {"200": found, "401": DENIED, "404": UNKNOWN, "429": LIMITED},
    }


def edit() -> dict[str, Any]:
    """``PATCH /api/conversations/{conversation_id}``."""
    return {
        "security": SECURITY,
        "summary": "Change a conversation's title, instructions or model",
        "requestBody": EDIT_BODY,
        "responses": {
            "200": {"description": "The conversation", "content": json_of(ref("Conversation"))},
            "400": BAD,
            "401": DENIED,
            "404": UNKNOWN,
            "408": BODY_LATE,
            "413": BODY_TOO_LARGE,
            "429": LIMITED,
        },
    }


def remove() -> dict[str, Any]:
    """``DELETE /api/conversations/{conversation_id}``."""
    return {
        "security": SECURITY,
        "summary": "Delete a conversation and its messages",
        "responses": {"204": {"description": "Deleted"}, "401": DENIED, "404": UNKNOWN, "429": LIMITED},
    }


FOLLOW_PARAMETERS = [
    {
        "name": "after",
        "in": "query",
        "schema": EVENT_ID,
        "description": "The id of the last event the client has (Last-Event-ID wins)",
    },
    {
        "name": "reply",
        "in": "query",
        "schema": {"type": "string"},
        "description": "The reply the event ids belong to (its message id): when the "
        "conversation's newest reply is another, 204",
    },
    {
        "name": "Last-Event-ID",
        "in": "header",
        "schema": EVENT_ID,
        "description": "As a browser's EventSource sends it when it reconnects",
    },
]


def follow() -> dict[str, Any]:
    """``GET /api/conversations/{conversation_id}/stream``: what was written so far, then the rest."""
    events = {
        "description": "The reply's events after the one named (all of them for none)",
        "headers": {
            "X-Conversation-ID": {"description": "The conversation", "schema": {"type": "string"}},
            "X-Message-ID": {"description": "The reply being followed", "schema": {"type": "string"}},
        },
        "content": PLAIN_OR_EVENTS,
    }
    nothing = {
        "description": "No reply is being written (or the id named the reply's final "
        "event, or the reply ended more than 60 seconds ago)"
    }
    return {
        "security": SECURITY,
        "summary": "Follow the reply being written: what it has so far, then the rest as it comes",
        "description": "Plain text, or Server-Sent Events with Accept: text/event-stream (metadata, "
        "then each event with its id, then done or error). Resume after an event with "
        "Last-Event-ID or ?after= (the header wins); a reader catching up may get a run of "
        "token events joined into one, bearing the last of their ids.",
        "parameters": FOLLOW_PARAMETERS,
        "responses": {
            "200": events,
            "204": nothing,
            "400": error_response("'after' or Last-Event-ID is not a whole number"),
            "401": DENIED,
            "404": UNKNOWN,
            "429": throttled(
                "Too many replies in flight for this client, or too many failed authentications "
                "from this address; see Retry-After"
            ),
        },
    }


def stop() -> dict[str, Any]:
    """``POST /api/conversations/{conversation_id}/stop``."""
    stopped = {
        "description": "The reply, stored as stopped with its text so far",
        "content": json_of(ref("Message")),
    }
    return {
        "security": SECURITY,
        "summary": "Stop the reply being written, wherever it is written",
        "responses": {
            "200": stopped,
            "204": {"description": "No reply was being written: nothing to stop"},
            "401": DENIED,
            "404": UNKNOWN,
            "429": LIMITED,
        },
    }
