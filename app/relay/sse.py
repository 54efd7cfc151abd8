"""Server-Sent Events as the service sends them: its own events framed, and the ping comment."""

from __future__ import annotations

import json
from typing import Any

import orjson


def frame(data: dict[str, Any]) -> bytes:
    """One event of ours, its JSON in UTF-8 (escaped only for a lone surrogate, which orjson
    refuses: the escaped halves of a pair split across deltas join again in the browser)."""
    try:
        return b"data: " + orjson.dumps(data) + b"\n\n"
    except TypeError:
        return b"data: " + json.dumps(data).encode() + b"\n\n"


def numbered(data: dict[str, Any], event_id: int) -> bytes:
    """One event of a conversation's reply, with its ``id:`` for resuming after it."""
    return b"id: %d\n%s" % (event_id, frame(data))


PING = b": ping\n\n"  # a comment: keeps proxies from closing a silent stream
