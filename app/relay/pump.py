"""A model's stream read in a thread of its own (a greenlet under gevent), so a silence can be timed.

Bounded: while the client is behind, the pump waits and the upstream is held back.
"""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Iterator
from typing import Any, Protocol

from ..loop import spawn
from ..upstream.stream import Delta, Reasoning, TimeSlice

QUEUED_DELTAS = 16  # SSE: deltas read ahead of a slow client (also the first one, for both framings)
HAND_OVER_POLL_S = 0.5  # how long the pump may wait on a full queue before checking the reply


class _Marker:
    """Not a delta: what the reader gets in place of one."""


PING: Any = _Marker()  # a silence longer than the ping interval
SILENT: Any = _Marker()  # the first delta had not come when the response started


class Reading(Protocol):
    """The reply whose source the pump reads."""

    deltas: Iterator[Delta]
    finished: bool  # the reply ended: the pump stops

    def close_source(self) -> None: ...


class Pump:
    """Reads ``reply.deltas`` into a queue; SSE reads it all here, plain text only its first delta,
    then the body reads on in the request's own greenlet (no hand-over per delta)."""

    def __init__(self, reply: Reading, keep_reading: bool) -> None:
        self.reply = reply
        self.items: queue.Queue[Delta | BaseException] = queue.Queue(maxsize=QUEUED_DELTAS)
        self.reading = True  # the pump reads the source, so only it may close it
        spawn(self._run, keep_reading)

    def first(self, wait_s: float | None) -> Delta | BaseException:
        """The first item, or SILENT when none came within ``wait_s``."""
        item: Delta | BaseException = SILENT
        with contextlib.suppress(queue.Empty):
            item = self.items.get(timeout=wait_s)
        return item

    def next(self, ping_s: float | None = None) -> Delta | BaseException:
        """The next item (a failure comes as its exception), or PING after a silence of ``ping_s``."""
        item: Delta | BaseException = PING
        with contextlib.suppress(queue.Empty):
            item = self.items.get(timeout=ping_s)
        return item

    def wake(self, item: BaseException) -> None:
        """Hand ``item`` to whoever waits for the next one, at once."""
        with contextlib.suppress(queue.Full):
            self.items.put_nowait(item)

    def _run(self, keep_reading: bool) -> None:
        reply = self.reply
        fair = TimeSlice()
        try:
            for item in reply.deltas:
                fair.tick()
                more = type(item) is str or type(item) is Reasoning
                if more and not keep_reading:
                    if reply.finished:
                        return  # the reply ended while the model was silent: close it here
                    # From here the body reads the source on, and close() closes it.
                    self.reading = False
                    self._hand_over(item)
                    return
                if not self._hand_over(item) or not more:
                    return
            self._hand_over(None)  # the model stopped without a last item: no usage
        except BaseException as error:
            self._hand_over(error)
        finally:
            if self.reading:
                reply.close_source()

    def _hand_over(self, item: Delta | BaseException) -> bool:
        """Queue ``item`` once there is room; False if the reply ended meanwhile."""
        while not self.reply.finished:
            try:
                self.items.put(item, timeout=HAND_OVER_POLL_S)
                return True
            except queue.Full:
                continue
        return False
