"""What a model's stream yields, and the two small interfaces every model (demo, OpenAI) offers;
with what every loop over a stream needs: a fair share of the worker, and UTF-8 valid on its own."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

MAX_TURNS = 200  # turns one request may send the model


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A checked chat request: the turns to send and the options for the model."""

    messages: tuple[dict[str, str], ...]
    model: str
    instructions: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None


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


# A reply whose upstream always has data and whose client always has room never waits, so
# under gevent it never lets the worker's other greenlets run: their timers (the upstream
# timeout) expire meanwhile. After this long relaying without a wait, it lets them run.
# Measured with make bench's fairness scenario (200 paced streams beside 20 bursts): with 2 ms
# slices, a turn of the 20 bursts took 40 ms and the paced streams' gap p99 was 110 ms (alone:
# 25 ms), TTFB p99 617-697 ms (alone: 119-130 ms); with 0.2 ms, gap p99 32-42 ms and TTFB
# p99 181-304 ms (alone: 25-32 and 180-255 ms). The bursts' CPU per delta did not change.
SLICE_S = 0.0002
# A timer, not sleep(0): under gevent sleep(0) only queues the greenlet among the hub's callbacks,
# and bursts that keep queueing themselves kept the loop from polling the sockets of the
# paced replies: measured with make bench's fairness scenario, paced streams beside 20 bursts
# saw gap p99 3,016 ms with sleep(0) and 120 ms with this (TTFB p99 377 vs 929 ms; 2 ms slices).
YIELD_S = 1e-6
WAITED_S = 0.001  # a longer gap between two deltas was a wait: the others ran meanwhile


class TimeSlice:
    """Lets the other greenlets run once a loop has gone on for SLICE_S without waiting."""

    __slots__ = ("last", "since")

    def __init__(self) -> None:
        # As if the loop had just waited: whatever came before the first delta (the model's
        # request, sent and answered) is not relaying, and must not cost the first delta a turn.
        self.since = self.last = 0.0

    def tick(self) -> None:
        """Call once per delta; yields to the others when this loop's slice is spent."""
        now = time.perf_counter()
        if now - self.last > WAITED_S:
            self.since = now
        elif now - self.since > SLICE_S:
            time.sleep(YIELD_S)  # the gevent worker patches it: a switch to the hub, which runs the others
            now = self.since = time.perf_counter()
        self.last = now


REPLACEMENT = "\ufffd".encode()  # stands for half a character the model never finished


def repaired(text: str) -> str:
    """The text as the stream route sends it: a lone half of a surrogate pair becomes U+FFFD."""
    data, carry = utf8(text)
    return data.decode() + ("\ufffd" if carry else "")


def utf8(text: str) -> tuple[bytes, str]:
    """Encode text as UTF-8 that is valid on its own.

    A delta can end inside a UTF-16 surrogate pair (some servers slice strings that way):
    the high half is held back as the carry for the next delta; a lone half becomes U+FFFD.
    """
    try:
        return text.encode(), ""
    except UnicodeEncodeError:
        pass
    carry = ""
    if "\ud800" <= text[-1] <= "\udbff":
        text, carry = text[:-1], text[-1]
    paired = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return paired.encode("utf-8", "replace"), carry
