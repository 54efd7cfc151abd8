"""Request bodies of the chat routes: parsed and checked, or a 400 naming the field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ApiError

ROLES = ("user", "assistant", "system")
MAX_TURNS = 200
MAX_TOKENS = 32768


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A checked chat request: the turns to send and the options for the model."""

    messages: tuple[dict[str, str], ...]
    model: str
    instructions: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None


def read_json(data: bytes, mimetype: str) -> Any:
    """Decode a request body that must be JSON, or raise a 400 that says why."""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise ApiError("Send the body as JSON with Content-Type: application/json.")
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        # ValueError covers bad UTF-8, bad syntax, NaN/Infinity and integers too long to parse.
        raise ApiError("The request body is not valid JSON.") from None


def parse_chat(body: Any, config: Mapping[str, Any]) -> ChatRequest:
    """Check a decoded body against the request rules and build a ChatRequest."""
    if not isinstance(body, dict):
        raise ApiError("The request body must be a JSON object.")
    turns = _turns(body.get("messages"))
    message = body.get("message")
    if message is not None:
        turns.append({"role": "user", "content": _message(message, config["MAX_MESSAGE_CHARS"])})
    if not turns:
        raise ApiError("Give a 'message' (a non-blank string) or a non-empty 'messages' list.")
    return ChatRequest(
        messages=tuple(turns),
        model=_model(body.get("model"), config),
        instructions=_instructions(body.get("instructions")),
        temperature=_temperature(body.get("temperature")),
        max_tokens=_max_tokens(body.get("max_tokens")),
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _text(value: str, field: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(f"'{field}' contains invalid Unicode (a lone surrogate).") from None
    return value


def _message(value: Any, limit: int) -> str:
    if not isinstance(value, str):
        raise ApiError("'message' must be a string.")
    if not value.strip():
        raise ApiError("'message' must not be blank.")
    if len(value) > limit:
        raise ApiError(f"'message' is {len(value)} characters long; the limit is {limit}.")
    return _text(value, "message")


def _turns(value: Any) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ApiError("'messages' must be a list of {role, content} objects.")
    if len(value) > MAX_TURNS:
        raise ApiError(f"'messages' has {len(value)} turns; the limit is {MAX_TURNS}.")
    turns = []
    for index, turn in enumerate(value):
        field = f"messages[{index}]"
        if not isinstance(turn, dict):
            raise ApiError(f"'{field}' must be an object with 'role' and 'content'.")
        role, content = turn.get("role"), turn.get("content")
        if role not in ROLES:
            raise ApiError(f"'{field}.role' must be one of {', '.join(ROLES)}.")
        if not isinstance(content, str):
            raise ApiError(f"'{field}.content' must be a string.")
        turns.append({"role": role, "content": _text(content, f"{field}.content")})
    return turns


def _model(value: Any, config: Mapping[str, Any]) -> str:
    if value is None:
        return str(config["OPENAI_MODEL"])
    allowed = config["ALLOWED_MODELS"]
    if not isinstance(value, str) or value not in allowed:
        raise ApiError(f"'model' must be one of: {', '.join(allowed)}.")
    return value


def _instructions(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError("'instructions' must be a string.")
    return _text(value, "instructions") if value.strip() else None


def _temperature(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 2:
        raise ApiError("'temperature' must be a number from 0 to 2.")
    return float(value)


def _max_tokens(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 64.0 is a whole number in JSON
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOKENS:
        raise ApiError(f"'max_tokens' must be a whole number from 1 to {MAX_TOKENS}.")
    return value
