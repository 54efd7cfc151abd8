"""Server-Sent Events as a client reads them: each event's ``id:`` (if any) and its JSON data."""

from __future__ import annotations

import json
from typing import Any


def numbered(body: bytes | str) -> list[tuple[int | None, dict[str, Any]]]:
    """Each event of ``body``: its id (None without one) and its data; comments are skipped."""
    text = body.decode() if isinstance(body, bytes) else body
    found = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event_id, data = None, []
        for line in block.split("\n"):
            if line.startswith("id:"):
                event_id = int(line[3:].strip())
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if data:
            found.append((event_id, json.loads("\n".join(data))))
    return found


def events(body: bytes | str) -> list[dict[str, Any]]:
    """The data of each event of ``body``."""
    return [data for _, data in numbered(body)]


def reply(body: bytes | str) -> str:
    """The reply's text: its token events' contents, joined."""
    return "".join(event["content"] for event in events(body) if event["type"] == "token")
