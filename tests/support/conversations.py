"""Stored conversations through a live server's API, as the live tests use them."""

from __future__ import annotations

from typing import Any

import requests

from ..fake_upstream import FakeUpstream
from .server import SECRET_KEY, LiveServer


def upstream_settings(upstream: FakeUpstream, **more: str) -> dict[str, str]:
    """A live server's settings for the fake upstream, JSON logs, and ``more``."""
    return {
        "OPENAI_API_KEY": SECRET_KEY,
        "OPENAI_BASE_URL": upstream.base_url,
        "UPSTREAM_TIMEOUT_S": "5",
        "LOG_FORMAT": "json",
        **more,
    }


def new_conversation(server: LiveServer) -> str:
    response = requests.post(f"{server.url}/api/conversations", json={}, timeout=10)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def messages(server: LiveServer, conversation_id: str) -> list[dict[str, Any]]:
    response = requests.get(f"{server.url}/api/conversations/{conversation_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["messages"]  # type: ignore[no-any-return]


def last_message(server: LiveServer, conversation_id: str) -> dict[str, Any]:
    return messages(server, conversation_id)[-1]
