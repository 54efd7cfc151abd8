"""What the operations share: JSON and streamed content, error responses, who may call."""

from __future__ import annotations

from typing import Any

# No credentials, or a bearer key: which one a deployment needs depends on its API_KEYS.
SECURITY: list[dict[str, Any]] = [{}, {"bearer": []}]


def ref(name: str) -> dict[str, str]:
    """A pointer to one of the document's named schemas."""
    return {"$ref": f"#/components/schemas/{name}"}


def json_of(schema: dict[str, Any]) -> dict[str, Any]:
    """Content that is JSON of ``schema``."""
    return {"application/json": {"schema": schema}}


def error_response(description: str) -> dict[str, Any]:
    """A response whose body is ``{"error": "<sentence>"}``."""
    return {"description": description, "content": json_of(ref("Error"))}


def throttled(description: str) -> dict[str, Any]:
    """A 429 with the seconds to wait in Retry-After."""
    retry_after = {"type": "string", "pattern": "^[0-9]+$"}
    return {
        **error_response(description),
        "headers": {"Retry-After": {"description": "Seconds to wait", "schema": retry_after}},
    }


# A reply as it is written: plain text, or Server-Sent Events when the client accepts them.
PLAIN_OR_EVENTS = {
    "text/plain": {"schema": {"type": "string"}},
    "text/event-stream": {"schema": {"type": "string"}},
}

DENIED = error_response("API keys are required and none valid was given")
BODY_LATE = error_response("The body did not arrive within REQUEST_BODY_TIMEOUT_S")
BODY_TOO_LARGE = error_response("The body is over 1 MiB")
