"""Server-sent events as an upstream sends them: its bytes split into each event's data.

Bounded: one event may not grow past MAX_EVENT_BYTES, so an endless line costs neither
quadratic time nor unbounded memory. Knows nothing of what the events mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

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
