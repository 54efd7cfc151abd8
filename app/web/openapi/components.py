"""The document's named schemas (request and reply bodies) and its security scheme."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...store.models import TITLE_CHARS
from ...upstream.stream import MAX_TURNS
from ..validation import MAX_TOKENS, ROLES
from .responses import ref

SECURITY_SCHEMES = {"bearer": {"type": "http", "scheme": "bearer"}}

NO_NUL = r"^[^\u0000]*$"  # stored text: Postgres cannot keep the NUL character
NULLABLE_TEXT = {"type": ["string", "null"]}
TIMESTAMP = {"type": "string", "format": "date-time"}
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


def schemas(config: Mapping[str, Any]) -> dict[str, Any]:
    """Every named schema, with this deployment's models and limits."""
    return {
        "ChatRequest": chat_request(config),
        "Reply": REPLY,
        **conversation_schemas(config),
        "Health": HEALTH,
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    }


def model_choice(config: Mapping[str, Any]) -> dict[str, Any]:
    """One of the models this deployment allows, or null."""
    return {"enum": [*config["ALLOWED_MODELS"], None]}


def chat_request(config: Mapping[str, Any]) -> dict[str, Any]:
    """The body of both chat routes: a new message, or the whole list of turns."""
    turn = {
        "type": "object",
        "required": ["role", "content"],
        "properties": {"role": {"enum": list(ROLES)}, "content": {"type": "string"}},
    }
    message = {
        "type": "string",
        "minLength": 1,
        "maxLength": config["MAX_MESSAGE_CHARS"],
        # Not blank as Python's str.strip() sees it: JSON Schema's \s lacks \x1c-\x1f and \x85.
        "pattern": r"[^\s\x1c-\x1f\x85]",
        "description": "The newest user turn: not blank",
    }
    return {
        "type": "object",
        "properties": {
            "message": message,
            "messages": {"type": "array", "maxItems": MAX_TURNS, "items": turn},
            "instructions": NULLABLE_TEXT,
            "model": model_choice(config),
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
    }


REPLY = {
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
}

CONVERSATION: dict[str, Any] = {
    "type": "object",
    "required": ["id", "title", "instructions", "model", "created_at", "updated_at"],
    "properties": {
        "id": {"type": "string"},
        "title": NULLABLE_TEXT,
        "instructions": NULLABLE_TEXT,
        "model": NULLABLE_TEXT,
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
        "streaming": {"type": "boolean", "description": "A reply is being written in it now"},
    },
}

MESSAGE = {
    "type": "object",
    "required": ["id", "role", "content", "status", "model", "usage", "created_at"],
    "properties": {
        "id": {"type": "string"},
        "role": {"enum": ["user", "assistant"]},
        "content": {"type": "string"},
        "status": {"enum": ["complete", "streaming", "stopped", "error", "interrupted"]},
        "model": NULLABLE_TEXT,
        "usage": USAGE,
        "error": {**NULLABLE_TEXT, "description": "Why a failed or interrupted reply ended"},
        "reasoning": {**NULLABLE_TEXT, "description": "The model's reasoning, where it streamed one"},
        "created_at": TIMESTAMP,
    },
}


def conversation_schemas(config: Mapping[str, Any]) -> dict[str, Any]:
    """A stored conversation, its messages, a page of them, and the fields a client may set."""
    with_messages = {
        **CONVERSATION,
        "required": [*CONVERSATION["required"], "messages"],
        "properties": {
            **CONVERSATION["properties"],
            "messages": {"type": "array", "items": ref("Message")},
        },
    }
    page = {
        "type": "object",
        "required": ["conversations", "next"],
        "properties": {
            "conversations": {"type": "array", "items": ref("Conversation")},
            "next": NULLABLE_TEXT,
        },
    }
    fields = {
        "type": "object",
        "properties": {
            "title": {**NULLABLE_TEXT, "maxLength": TITLE_CHARS, "pattern": NO_NUL},
            "instructions": {**NULLABLE_TEXT, "pattern": NO_NUL},
            "model": model_choice(config),
        },
    }
    return {
        "Conversation": CONVERSATION,
        "ConversationWithMessages": with_messages,
        "Message": MESSAGE,
        "ConversationPage": page,
        "ConversationFields": fields,
    }


HEALTH = {
    "type": "object",
    "required": ["status", "provider", "model", "api"],
    "properties": {
        "status": {"const": "ok"},
        "provider": {"enum": ["demo", "openai"]},
        "model": {"type": "string"},
        "api": {"enum": ["chat", "responses"]},
    },
}
