"""``GET /openapi.json``: an OpenAPI 3.1 description of the routes, built from the live settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, current_app

from ..store.models import TITLE_CHARS
from ..upstream.stream import MAX_TURNS
from .conversations import CURSOR
from .validation import MAX_TOKENS, ROLES

bp = Blueprint("openapi", __name__)

ERROR = {"$ref": "#/components/schemas/Error"}
USAGE = {
    "oneOf": [
        {"type": "null"},
        {
            "type": "object",
            "required": ["input_tokens", "output_tokens"],
            "properties": {"input_tokens": {"type": "integer"}, "output_tokens": {"type": "integer"}},
        },
    ]
}
CONVERSATION = {"$ref": "#/components/schemas/Conversation"}
NO_NUL = r"^[^\u0000]*$"  # stored text: Postgres cannot keep the NUL character


@bp.get("/openapi.json")
def openapi() -> dict[str, Any]:
    """The document, with this deployment's models and limits."""
    return document(current_app.config)


def document(config: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAPI 3.1 for every route the service answers."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "AI Chat API",
            "version": "1.0.0",
            "description": "Chat with a language model, whole (JSON) or streamed as it is written.",
        },
        "paths": {
            "/api/chat": {"post": chat_operation(False)},
            "/api/chat/stream": {"post": chat_operation(True)},
            **conversation_paths(),
            "/": {
                "get": {
                    "summary": "The chat page for browsers, a line of text for anything else",
                    "responses": {
                        "200": {
                            "description": "The page or the line",
                            "content": {
                                "text/html": {"schema": {"type": "string"}},
                                "text/plain": {"schema": {"type": "string"}},
                            },
                        }
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "The provider, model and API in use",
                    "responses": {
                        "200": {
                            "description": "Up",
                            "content": json_of({"$ref": "#/components/schemas/Health"}),
                        }
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "401": error_response("A metrics token is set and was not given"),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {
                        "200": {"description": "OpenAPI 3.1", "content": json_of({"type": "object"})}
                    },
                }
            },
        },
        "components": {
            "schemas": schemas(config),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def chat_operation(stream: bool) -> dict[str, Any]:
    if stream:
        ok = {
            "description": "The reply's text as it is written; a failure after the start ends it with "
            "'\\n[error: <reason>]' (with Accept: text/event-stream: metadata, then token and reasoning, "
            "then done or error events; in a conversation turn each event after metadata has an id:)",
            "content": {
                "text/plain": {"schema": {"type": "string"}},
                "text/event-stream": {"schema": {"type": "string"}},
            },
        }
    else:
        ok = {"description": "The whole reply", "content": json_of({"$ref": "#/components/schemas/Reply"})}
    request_id = {
        "X-Request-ID": {
            "description": "The request's id (kept from the request if given)",
            "schema": {"type": "string"},
        }
    }
    ok["headers"] = request_id
    if stream:
        ok["headers"] = {
            **request_id,
            "X-Conversation-ID": {"description": "The conversation, in a turn", "schema": {"type": "string"}},
            "X-Message-ID": {"description": "The stored reply, in a turn", "schema": {"type": "string"}},
        }
    limited = throttled(
        "Over the rate limit (ours or the model provider's), too many replies in flight, or too many "
        "failed authentications from this address; see Retry-After"
    )
    return {
        "summary": "Stream a reply" if stream else "Get a whole reply",
        "security": [{}, {"bearer": []}],
        "requestBody": {"required": True, "content": json_of({"$ref": "#/components/schemas/ChatRequest"})},
        "responses": {
            "200": ok,
            "400": error_response("The body is not valid: the sentence names the field"),
            "401": error_response("API keys are required and none valid was given"),
            "408": error_response("The body did not arrive within REQUEST_BODY_TIMEOUT_S"),
            "404": error_response("No conversation with that 'conversation_id' (for this API key)"),
            "409": error_response("A reply in that conversation is still being written"),
            "413": error_response("The body is over 1 MiB"),
            "429": limited,
            "502": error_response("The model provider refused, rejected our key, or broke"),
            "504": error_response("The model provider went silent for too long"),
        },
    }


def schemas(config: Mapping[str, Any]) -> dict[str, Any]:
    turn = {
        "type": "object",
        "required": ["role", "content"],
        "properties": {"role": {"enum": list(ROLES)}, "content": {"type": "string"}},
    }
    return {
        "ChatRequest": {
            "type": "object",
            "properties": {
                "message": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": config["MAX_MESSAGE_CHARS"],
                    # Not blank as Python's str.strip() sees it: JSON Schema's \s lacks \x1c-\x1f and \x85.
                    "pattern": r"[^\s\x1c-\x1f\x85]",
                    "description": "The newest user turn: not blank",
                },
                "messages": {"type": "array", "maxItems": MAX_TURNS, "items": turn},
                "instructions": {"type": ["string", "null"]},
                "model": {"enum": [*config["ALLOWED_MODELS"], None]},
                "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
                "max_tokens": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_TOKENS},
                "conversation_id": {
                    "type": ["string", "null"],
                    "description": "A stored conversation: give 'message' and leave out 'messages'",
                },
            },
            "anyOf": [
                {"required": ["message"], "properties": {"message": {"type": "string"}}},
                {"required": ["messages"], "properties": {"messages": {"minItems": 1}}},
            ],
        },
        "Reply": {
            "type": "object",
            "required": ["reply", "model", "usage", "request_id"],
            "properties": {
                "reply": {"type": "string"},
                "model": {"type": "string"},
                "usage": USAGE,
                "request_id": {"type": "string"},
                "conversation_id": {"type": "string", "description": "In a conversation turn"},
                "message_id": {"type": "string", "description": "The stored reply, in a turn"},
                "status": {
                    "enum": ["complete", "stopped"],
                    "description": "How the stored reply ended, in a turn (stopped: from elsewhere)",
                },
            },
        },
        **conversation_schemas(config),
        "Health": {
            "type": "object",
            "required": ["status", "provider", "model", "api"],
            "properties": {
                "status": {"const": "ok"},
                "provider": {"enum": ["demo", "openai"]},
                "model": {"type": "string"},
                "api": {"enum": ["chat", "responses"]},
            },
        },
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    }


def throttled(description: str) -> dict[str, Any]:
    """A 429 with the seconds to wait in Retry-After."""
    response = error_response(description)
    response["headers"] = {
        "Retry-After": {"description": "Seconds to wait", "schema": {"type": "string", "pattern": "^[0-9]+$"}}
    }
    return response


def json_of(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": json_of(ERROR)}


def conversation_paths() -> dict[str, Any]:
    """Create, list, read, update and delete stored conversations."""
    guarded: dict[str, Any] = {"security": [{}, {"bearer": []}]}
    limited = throttled("Too many failed authentications from this address; see Retry-After")
    unknown = error_response("No conversation with that id (for this API key)")
    bad = error_response("The body or a parameter is not valid: the sentence names it")
    denied = error_response("API keys are required and none valid was given")
    conversation_id = {
        "name": "conversation_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    edit_body = {"required": True, "content": json_of({"$ref": "#/components/schemas/ConversationFields"})}
    return {
        "/api/conversations": {
            "post": {
                **guarded,
                "summary": "Start a conversation",
                "requestBody": edit_body,
                "responses": {
                    "201": {
                        "description": "Created",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                        "content": json_of(CONVERSATION),
                    },
                    "400": bad,
                    "401": denied,
                    "408": error_response("The body did not arrive within REQUEST_BODY_TIMEOUT_S"),
                    "413": error_response("The body is over 1 MiB"),
                    "429": limited,
                },
            },
            "get": {
                **guarded,
                "summary": "Conversations, most recently active first",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                    },
                    {
                        "name": "before",
                        "in": "query",
                        "schema": {"type": "string", "pattern": f"^{CURSOR.pattern}$"},
                        "description": "The 'next' value of the page before",
                    },
                ],
                "responses": {
                    "200": {
                        "description": "A page; 'next' fetches the following one",
                        "content": json_of({"$ref": "#/components/schemas/ConversationPage"}),
                    },
                    "400": bad,
                    "401": denied,
                    "429": limited,
                },
            },
        },
        "/api/conversations/{conversation_id}": {
            "parameters": [conversation_id],
            "get": {
                **guarded,
                "summary": "A conversation and its messages, oldest first",
                "responses": {
                    "200": {
                        "description": "The conversation",
                        "content": json_of({"$ref": "#/components/schemas/ConversationWithMessages"}),
                    },
                    "401": denied,
                    "404": unknown,
                    "429": limited,
                },
            },
            "patch": {
                **guarded,
                "summary": "Change a conversation's title, instructions or model",
                "requestBody": edit_body,
                "responses": {
                    "200": {"description": "The conversation", "content": json_of(CONVERSATION)},
                    "400": bad,
                    "401": denied,
                    "404": unknown,
                    "408": error_response("The body did not arrive within REQUEST_BODY_TIMEOUT_S"),
                    "413": error_response("The body is over 1 MiB"),
                    "429": limited,
                },
            },
            "delete": {
                **guarded,
                "summary": "Delete a conversation and its messages",
                "responses": {
                    "204": {"description": "Deleted"},
                    "401": denied,
                    "404": unknown,
                    "429": limited,
                },
            },
        },
        **reply_paths(guarded, conversation_id, denied, unknown, limited),
    }


def reply_paths(
    guarded: dict[str, Any], conversation_id: dict[str, Any], *errors: dict[str, Any]
) -> dict[str, Any]:
    """Follow and stop the reply being written in a conversation, from any worker or host."""
    denied, unknown, limited = errors
    ids = {
        "X-Conversation-ID": {"description": "The conversation", "schema": {"type": "string"}},
        "X-Message-ID": {"description": "The reply being followed", "schema": {"type": "string"}},
    }
    return {
        "/api/conversations/{conversation_id}/stream": {
            "parameters": [conversation_id],
            "get": {
                **guarded,
                "summary": "Follow the reply being written: what it has so far, then the rest as it comes",
                "description": "Plain text, or Server-Sent Events with Accept: text/event-stream (metadata, "
                "then each event with its id, then done or error). Resume after an event with "
                "Last-Event-ID or ?after= (the header wins); a reader catching up may get a run of "
                "token events joined into one, bearing the last of their ids.",
                "parameters": [
                    {
                        "name": "after",
                        "in": "query",
                        "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
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
                        "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                        "description": "As a browser's EventSource sends it when it reconnects",
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The reply's events after the one named (all of them for none)",
                        "headers": ids,
                        "content": {
                            "text/plain": {"schema": {"type": "string"}},
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    },
                    "204": {
                        "description": "No reply is being written (or the id named the reply's final "
                        "event, or the reply ended more than 60 seconds ago)"
                    },
                    "400": error_response("'after' or Last-Event-ID is not a whole number"),
                    "401": denied,
                    "404": unknown,
                    "429": throttled(
                        "Too many replies in flight for this client, or too many failed authentications "
                        "from this address; see Retry-After"
                    ),
                },
            },
        },
        "/api/conversations/{conversation_id}/stop": {
            "parameters": [conversation_id],
            "post": {
                **guarded,
                "summary": "Stop the reply being written, wherever it is written",
                "responses": {
                    "200": {
                        "description": "The reply, stored as stopped with its text so far",
                        "content": json_of({"$ref": "#/components/schemas/Message"}),
                    },
                    "204": {"description": "No reply was being written: nothing to stop"},
                    "401": denied,
                    "404": unknown,
                    "429": limited,
                },
            },
        },
    }


def conversation_schemas(config: Mapping[str, Any]) -> dict[str, Any]:
    nullable_text = {"type": ["string", "null"]}
    conversation: dict[str, Any] = {
        "type": "object",
        "required": ["id", "title", "instructions", "model", "created_at", "updated_at"],
        "properties": {
            "id": {"type": "string"},
            "title": nullable_text,
            "instructions": nullable_text,
            "model": nullable_text,
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "streaming": {"type": "boolean", "description": "A reply is being written in it now"},
        },
    }
    message = {
        "type": "object",
        "required": ["id", "role", "content", "status", "model", "usage", "created_at"],
        "properties": {
            "id": {"type": "string"},
            "role": {"enum": ["user", "assistant"]},
            "content": {"type": "string"},
            "status": {"enum": ["complete", "streaming", "stopped", "error", "interrupted"]},
            "model": nullable_text,
            "usage": USAGE,
            "error": {**nullable_text, "description": "Why a failed or interrupted reply ended"},
            "reasoning": {**nullable_text, "description": "The model's reasoning, where it streamed one"},
            "created_at": {"type": "string", "format": "date-time"},
        },
    }
    return {
        "Conversation": conversation,
        "ConversationWithMessages": {
            **conversation,
            "required": [*conversation["required"], "messages"],
            "properties": {
                **conversation["properties"],
                "messages": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}},
            },
        },
        "Message": message,
        "ConversationPage": {
            "type": "object",
            "required": ["conversations", "next"],
            "properties": {"conversations": {"type": "array", "items": CONVERSATION}, "next": nullable_text},
        },
        "ConversationFields": {
            "type": "object",
            "properties": {
                "title": {"type": ["string", "null"], "maxLength": TITLE_CHARS, "pattern": NO_NUL},
                "instructions": {"type": ["string", "null"], "pattern": NO_NUL},
                "model": {"enum": [*config["ALLOWED_MODELS"], None]},
            },
        },
    }
