"""Server-sent events: split an upstream's bytes into events' data, and frame our own events.

Bounded: one event may not grow past MAX_EVENT_BYTES, so an endless line costs neither
quadratic time nor unbounded memory. Knows nothing of what the events mean.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

MAX_EVENT_BYTES = 1 << 20  # one server-sent event; OpenAI's are a few hundred bytes


class EventTooLong(ValueError):
    """An event grew past MAX_EVENT_BYTES."""


def batches(reads: Iterable[bytes]) -> Iterator[list[bytes]]:
    """For each network read, the data of the server-sent events it completed (often one).

    Only the new bytes are searched for the end of an event, so a long event costs linear time.
    """
    parts: list[bytes] = []  # the unfinished event
    size = 0
    for read in reads:
        if not read:
            continue  # it would hide a CRLF split around it
        if parts and parts[-1].endswith(b"\r") and read.startswith(b"\n"):
            parts[-1] = parts[-1][:-1]  # a CRLF split between two reads
            if not parts[-1]:
                parts.pop()
        if b"\r" in read:
            read = read.replace(b"\r\n", b"\n")
        seam = bool(parts) and parts[-1].endswith(b"\n") and read.startswith(b"\n")
        if b"\n\n" not in read and not seam:
            parts.append(read)
            size += len(read)
            if size > MAX_EVENT_BYTES:
                raise EventTooLong
            continue
        if parts:
            read = b"".join(parts) + read
        *blocks, rest = read.split(b"\n\n")
        parts, size = ([rest], len(rest)) if rest else ([], 0)
        if size > MAX_EVENT_BYTES:
            raise EventTooLong
        yield [data for block in blocks if (data := event_data(block)) is not None]
    if parts and (data := event_data(b"".join(parts))) is not None:
        yield [data]


def event_data(block: bytes) -> bytes | None:
    """The data of one event's lines; "event:", "id:", "retry:" and comments carry nothing we need."""
    if block.startswith(b"data: ") and b"\n" not in block:
        return block[6:]  # the usual shape: one data line
    data = [
        line[6:] if line.startswith(b"data: ") else line[5:]
        for line in block.split(b"\n")
        if line.startswith(b"data:")
    ]
    return b"\n".join(data) if data else None


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
