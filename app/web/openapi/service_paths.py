"""The routes around the API: the page, the health check, the metrics and this document."""

from __future__ import annotations

from typing import Any

from .responses import error_response, json_of, ref

TEXT = {"type": "string"}

PAGE = {
    "summary": "The chat page for browsers, a line of text for anything else",
    "responses": {
        "200": {
            "description": "The page or the line",
            "content": {"text/html": {"schema": TEXT}, "text/plain": {"schema": TEXT}},
        }
    },
}

HEALTH_CHECK = {
    "summary": "The provider, model and API in use",
    "responses": {"200": {"description": "Up", "content": json_of(ref("Health"))}},
}

METRICS = {
    "summary": "Prometheus metrics",
    "responses": {
        "200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": TEXT}}},
        "401": error_response("A metrics token is set and was not given"),
    },
}

THIS_DOCUMENT = {
    "summary": "This document",
    "responses": {"200": {"description": "OpenAPI 3.1", "content": json_of({"type": "object"})}},
}


def paths() -> dict[str, Any]:
    """One GET each."""
    return {
        "/": {"get": PAGE},
        "/healthz": {"get": HEALTH_CHECK},
        "/metrics": {"get": METRICS},
        "/openapi.json": {"get": THIS_DOCUMENT},
    }
