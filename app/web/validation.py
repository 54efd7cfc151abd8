"""Request bodies of the chat routes: parsed and checked, or a 400 naming the field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from ..errors import ApiError
from ..store.models import TITLE_CHARS
from ..upstream.stream import MAX_TURNS, ChatRequest

ROLES = ("user", "assistant", "system")
MAX_TOKENS = 32768


class Defaults(Protocol):
    """A stored conversation's defaults for its turns."""

    @property
    def instructions(self) -> str | None: ...

    @property
    def model(self) -> str | None: ...


def read_json(data: bytes, mimetype: str) -> Any:
    """Decode a request body that must be JSON, or raise a 400 that says why."""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise ApiError("Send the body as JSON with Content-Type: application/json.")
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        # ValueError covers bad UTF-8, bad syntax, NaN/Infinity and integers too long to parse.
        raise ApiError("The request body is not valid JSON.") from None


def parse_chat(body: Any, config: Mapping[str, Any], conversation: Defaults | None = None) -> ChatRequest:
    """Check a decoded body against the request rules and build a ChatRequest.

    In a stored ``conversation`` the body brings only the new message; the conversation's
    instructions and model are the defaults (its history is added when the turn starts).
    """
    if not isinstance(body, dict):
        raise ApiError("The request body must be a JSON object.")
    if conversation is not None and body.get("messages") is not None:
        raise ApiError("Leave out 'messages' when giving 'conversation_id': the server keeps the history.")
    if conversation is not None and body.get("message") is None:
        raise ApiError("Give a 'message' (a non-blank string) to add to the conversation.")
    turns = _turns(body.get("messages"))
    message = body.get("message")
    if message is not None:
        turns.append({"role": "user", "content": _message(message, config["MAX_MESSAGE_CHARS"])})
    if not turns:
        raise ApiError("Give a 'message' (a non-blank string) or a non-empty 'messages' list.")
    instructions = _instructions(body.get("instructions"))
    model = body.get("model")
    if conversation is not None:
        _storable(turns[-1]["content"], "message")
        _storable(instructions, "instructions")
        instructions = instructions or conversation.instructions
        if model is None and conversation.model in config["ALLOWED_MODELS"]:
            model = conversation.model  # a model no longer offered falls back to the default
    return ChatRequest(
        messages=tuple(turns),
        model=_model(model, config),
        instructions=instructions,
        temperature=_temperature(body.get("temperature")),
        max_tokens=_max_tokens(body.get("max_tokens")),
    )


def conversation_ref(body: Any) -> str | None:
    """The ``conversation_id`` a chat body names, if any (a string; whether it exists is checked later)."""
    value = body.get("conversation_id") if isinstance(body, dict) else None
    if value is not None and not isinstance(value, str):
        raise ApiError("'conversation_id' must be a string: the id of a stored conversation.")
    return value


def parse_conversation(body: Any, config: Mapping[str, Any]) -> dict[str, str | None]:
    """The fields a conversation is created or updated with: those the body names, checked."""
    if not isinstance(body, dict):
        raise ApiError("The request body must be a JSON object.")
    fields: dict[str, str | None] = {}
    if "title" in body:
        fields["title"] = _storable(_title(body["title"]), "title")
    if "instructions" in body:
        fields["instructions"] = _storable(_instructions(body["instructions"]), "instructions")
    if "model" in body:
        fields["model"] = None if body["model"] is None else _model(body["model"], config)
    return fields


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _text(value: str, field: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(f"'{field}' contains invalid Unicode (a lone surrogate).") from None
    return value


def _storable(value: str | None, field: str) -> str | None:
    """Text that is kept in the database, which (Postgres) cannot store the NUL character."""
    if value is not None and "\x00" in value:
        raise ApiError(f"'{field}' contains the NUL character (\\u0000), which cannot be stored.")
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


def _title(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError("'title' must be a string.")
    title = " ".join(_text(value, "title").split())  # one line, whatever was pasted
    if len(title) > TITLE_CHARS:
        raise ApiError(f"'title' is {len(title)} characters long; the limit is {TITLE_CHARS}.")
    return title or None


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
