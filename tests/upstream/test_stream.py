from __future__ import annotations

import pytest

from app.upstream.stream import utf8


@pytest.mark.parametrize(
    ("text", "data", "carry"),
    [
        ("plain", b"plain", ""),
        ("é🤖", "é🤖".encode(), ""),
        ("end \ud83e", b"end ", "\ud83e"),
        ("\ud83e\udd16", "🤖".encode(), ""),
        ("a \udc00 b", "a \ufffd b".encode(), ""),
        ("\ud83e", b"", "\ud83e"),
    ],
)
def test_utf8_is_valid_on_its_own(text: str, data: bytes, carry: str) -> None:
    assert utf8(text) == (data, carry)
    data.decode("utf-8")
