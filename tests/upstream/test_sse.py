from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.upstream import sse
from app.upstream.sse import MAX_EVENT_BYTES


def events(*chunks: bytes) -> list[bytes]:
    return [data for batch in sse.batches(chunks) for data in batch]


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ((b"data: a\n\n",), [b"a"]),
        ((b"data: a\n\ndata: b\n\n",), [b"a", b"b"]),
        ((b"da", b"ta: a", b"\n", b"\nda", b"ta: b\n\n"), [b"a", b"b"]),
        ((b"data: a\r\n\r\ndata: b\r\n\r\n",), [b"a", b"b"]),
        ((b"event: x\ndata: a\nid: 3\nretry: 5\n\n",), [b"a"]),
        ((b"data: one\ndata: two\n\n",), [b"one\ntwo"]),
        ((b": ping\n\n", b"data:tight\n\n"), [b"tight"]),
        ((b"data: last",), [b"last"]),
        ((b"data: done\n",), [b"done"]),
        ((b"\n\n\n",), []),
        ((b"data: a\r", b"\n\r\ndata: b\r\n", b"\r\n"), [b"a", b"b"]),
        ((b"data: a\n", b"\ndata: b\n\n"), [b"a", b"b"]),
        ((b"data: a", b"bc", b"def\n\n"), [b"abcdef"]),
    ],
)
def test_batches_split_events(chunks: tuple[bytes, ...], expected: list[bytes]) -> None:
    assert events(*chunks) == expected


def test_an_endless_event_is_cut_off_at_the_cap() -> None:
    taken = 0

    def endless() -> Iterator[bytes]:
        nonlocal taken
        yield b'data: {"choices": [{"delta": {"content": "'
        while True:
            taken += 4096
            yield b"x" * 4096

    with pytest.raises(sse.EventTooLong):
        list(sse.batches(endless()))
    assert MAX_EVENT_BYTES - 4096 < taken <= MAX_EVENT_BYTES + 4096  # no more held than the cap


# A valid stream: each event as its lines (data, comments, event:/id:/retry:), and the data it carries.
line_text = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12)
field = st.sampled_from(["event: x", "id: 7", "retry: 10", ": ping", ":"])


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A valid upstream stream and the data of its events, in LF or CRLF line endings."""
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    body, expected = b"", []
    for _ in range(draw(st.integers(0, 5))):
        data = draw(st.lists(line_text, min_size=0, max_size=3))
        extra = draw(st.lists(field, max_size=2))
        # "data:x" is "data: x"; the one space after the colon is not part of the data.
        lines = [
            f"data:{text}" if draw(st.booleans()) and text[:1] != " " else f"data: {text}" for text in data
        ]
        block = [line.encode() for line in extra + lines]
        if not block:
            continue
        body += newline.join(block) + newline + newline
        if data:
            expected.append("\n".join(data).encode())
    return body, expected


@given(streams(), st.data())
@settings(max_examples=300, deadline=None)
def test_events_are_the_same_wherever_the_reads_are_cut(
    stream: tuple[bytes, list[bytes]], data: st.DataObject
) -> None:
    body, expected = stream
    assert events(body) == expected
    cuts = sorted(data.draw(st.sets(st.integers(0, len(body)), max_size=8)))
    reads = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert events(*reads) == expected


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_events_are_the_same_cut_at_every_byte(newline: bytes) -> None:
    body = newline.join(
        [b": ping", b"", b"event: x", b"data: a", b"data:b", b"id: 1", b"", b"data: [DONE]", b""]
    )
    body += newline
    for at in range(len(body) + 1):
        assert events(body[:at], body[at:]) == [b"a\nb", b"[DONE]"], at
