"""``GET /openapi.json``: an OpenAPI 3.1 description of the routes, built from the live settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, current_app

from .validation import MAX_TOKENS, MAX_TURNS, ROLES

bp = Blueprint("openapi", __name__)

ERROR = {"$ref": "#/components/schemas/Error"}


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
            "then done or error events)",
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
    limited = error_response("Over the rate limit (ours or the model provider's); see Retry-After")
    limited["headers"] = {
        **request_id,
        "Retry-After": {
            "description": "Seconds to wait",
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        },
    }
    return {
        "summary": "Stream a reply" if stream else "Get a whole reply",
        "security": [{}, {"bearer": []}],
        "requestBody": {"required": True, "content": json_of({"$ref": "#/components/schemas/ChatRequest"})},
        "responses": {
            "200": ok,
            "400": error_response("The body is not valid: the sentence names the field"),
            "401": error_response("API keys are required and none valid was given"),
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
                    "pattern": r"\S",
                    "description": "The newest user turn: not blank",
                },
                "messages": {"type": "array", "maxItems": MAX_TURNS, "items": turn},
                "instructions": {"type": ["string", "null"]},
                "model": {"enum": [*config["ALLOWED_MODELS"], None]},
                "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
                "max_tokens": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_TOKENS},
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
                "usage": {
                    "oneOf": [
                        {"type": "null"},
                        {
                            "type": "object",
                            "required": ["input_tokens", "output_tokens"],
                            "properties": {
                                "input_tokens": {"type": "integer"},
                                "output_tokens": {"type": "integer"},
                            },
                        },
                    ]
                },
                "request_id": {"type": "string"},
            },
        },
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


def json_of(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": json_of(ERROR)}
