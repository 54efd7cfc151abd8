"""``GET /openapi.json``: an OpenAPI 3.1 description of the routes, built from the live settings.

The document is put together from small parts: ``chat_paths``, ``conversation_paths`` and
``service_paths`` describe the routes of each blueprint, ``components`` the named request and reply
bodies, and ``responses`` what their operations share (error bodies, Retry-After, who may call).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, current_app

from . import chat_paths, components, conversation_paths, service_paths

bp = Blueprint("openapi", __name__)

INFO = {
    "title": "AI Chat API",
    "version": "1.0.0",
    "description": "Chat with a language model, whole (JSON) or streamed as it is written.",
}


@bp.get("/openapi.json")
def openapi() -> dict[str, Any]:
    """The document, with this deployment's models and limits."""
    return document(current_app.config)


def document(config: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAPI 3.1 for every route the service answers."""
    return {
        "openapi": "3.1.0",
        "info": INFO,
        "paths": {**chat_paths.paths(), **conversation_paths.paths(), **service_paths.paths()},
        "components": {
            "schemas": components.schemas(config),
            "securitySchemes": components.SECURITY_SCHEMES,
        },
    }
