"""A reply's event log as one worker holds it: its events so far, how it ended, and who waits.

Events are numbered from 1 in the order the model wrote them: answer text (``str``) and
reasoning (``Reasoning``); the end is numbered one past the last of them. Every worker
numbers a reply alike, whether it writes the reply or follows it from the database or Redis,
so an id means the same on every host. Readers keep a cursor (how many events they have)
and wait here for more; whoever adds an event wakes them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import ApiError
from ..upstream.stream import Reasoning, Usage, utf8

Event = str | Reasoning

INTERRUPTED = "The reply was interrupted: the server writing it stopped before the end."


@dataclass(frozen=True, slots=True)
class End:
    """How a reply ended: ``complete``, ``stopped``, ``error`` or ``interrupted``."""

    status: str
    usage: Usage | None = None
    message: str | None = None  # the sentence readers get when it failed
    # On the writing worker only: the failure itself, so a turn whose response has not
    # started yet answers with its real status (a 429, a 504) instead of an in-band error.
    error: ApiError | None = None
    reason: str | None = None  # the access line's reason (upstream_timeout, internal, ...)


class ReplyLog:
    """The events of one reply, in order, and its end once there is one."""

    __slots__ = ("_ending", "_waiting", "end", "events")

    def __init__(self, events: Iterable[Event] = ()) -> None:
        self.events: list[Event] = list(events)
        self.end: End | None = None
        self._waiting: list[threading.Event] = []  # rung at every event
        self._ending: list[threading.Event] = []  # rung at the end only

    def add(self, event: Event) -> None:
        """Append one event and wake its readers."""
        self.events.append(event)
        if self._waiting:
            self._wake()

    def extend(self, events: Iterable[Event]) -> None:
        """Append events read from elsewhere, in their order, and wake the readers."""
        self.events.extend(events)
        self._wake()

    def finish(self, end: End) -> None:
        """Record how the reply ended (once) and wake the readers."""
        if self.end is None:
            self.end = end
        self._wake()
        ending, self._ending = self._ending, []
        for bell in ending:
            bell.set()

    def ready(self, cursor: int) -> bool:
        """Is there anything past ``cursor``: an event, or the end?"""
        return len(self.events) > cursor or self.end is not None

    def wait(self, cursor: int, bell: threading.Event, timeout: float | None) -> bool:
        """Wait until there is something past ``cursor``, ``bell`` rings, or ``timeout`` passes;
        is there something past ``cursor`` now?"""
        if self.ready(cursor):
            return True
        bell.clear()
        self._waiting.append(bell)
        # Looked at again once registered: an event added in between rang no bell of ours.
        if self.ready(cursor):
            return True
        bell.wait(timeout)
        return self.ready(cursor)

    def wait_end(self, bell: threading.Event, timeout: float | None = None) -> bool:
        """Wait until the reply has ended, ``bell`` rings, or ``timeout`` passes; has it ended?"""
        if self.end is not None:
            return True
        bell.clear()
        self._ending.append(bell)
        if self.end is not None:
            return True
        bell.wait(timeout)
        return self.end is not None

    def text(self) -> str:
        """The answer so far."""
        return "".join(event for event in self.events if type(event) is str)

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, []
        for bell in waiting:
            bell.set()


def clean(text: str, carry: str) -> tuple[str, str]:
    """``text`` as a reply keeps it, and the carry for the next piece.

    Valid on its own: half of a surrogate pair that a server split across two deltas waits
    in the carry for its other half, and a lone half becomes U+FFFD; NUL (which Postgres
    cannot store) becomes U+FFFD too. What is sent is what is stored, character for character,
    so an event's length places it in the stored text.
    """
    if carry:
        text = carry + text
        carry = ""
    try:
        text.encode()
    except UnicodeEncodeError:
        data, carry = utf8(text)
        text = data.decode()
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return text, carry


def joined(events: list[Event]) -> list[tuple[Event, int]]:
    """``events`` with each run of one kind joined into one event, with the index of the run's
    last event: how a reader catching up gets what it missed."""
    runs: list[tuple[Event, int]] = []
    start = 0
    for index in range(1, len(events) + 1):
        if index == len(events) or type(events[index]) is not type(events[start]):
            run = "".join(events[start:index])
            runs.append((Reasoning(run) if type(events[start]) is Reasoning else run, index - 1))
            start = index
    return runs
