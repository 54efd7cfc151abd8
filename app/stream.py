"""What a model's stream yields, and the two small interfaces every model (demo, OpenAI) offers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from .validation import ChatRequest


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts the model reported for one reply."""

    input_tokens: int
    output_tokens: int

    def as_dict(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}


class Reasoning(str):
    """A piece of the model's reasoning text, sent apart from the answer (SSE only)."""

    __slots__ = ()


# Answer text, Reasoning, then one Usage (or None) as the last item. The relay tells them
# apart with ``type(item) is str``, cheap on the hot path.
Delta = str | Reasoning | Usage | None


class Source(Iterable[Delta], Protocol):
    """One reply in flight: iterate it for deltas; ``close()`` ends it from the greenlet that reads it.

    A source may also offer ``cancel()``, which hangs up from any greenlet while another
    waits on it (the OpenAI model does; a generator has nothing to cancel).
    """

    def close(self) -> None: ...


class Model(Protocol):
    """What the app asks of a model: a stream per request, and ``close()`` at the end."""

    def stream(self, chat: ChatRequest) -> Source: ...

    def close(self) -> None: ...
