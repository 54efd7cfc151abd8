"""One reply written as the server's own work: the model's stream read into the reply's log, in a
thread of its own (a greenlet under gevent), whether or not anyone reads it.

The job owns the model's stream: it alone reads and closes it. A stop (from the stop route,
the turn's own client leaving under ``REPLY_ON_DISCONNECT=stop``, or a worker shutting down)
hangs up on the model and ends the reply as ``stopped`` or ``interrupted``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..errors import ApiError, UpstreamError
from ..upstream.stream import Reasoning, Source, TimeSlice, Usage
from .log import INTERRUPTED, End, Event, ReplyLog, clean

log = logging.getLogger(__name__)

INTERNAL_ERROR = "The server hit an unexpected error."


class Job:
    """One reply being written: its ids, its log, and what its checkpoints have stored so far."""

    def __init__(
        self,
        conversation_id: str,
        message_id: str,
        source: Source,
        finished: Callable[[Job, End], None],
        release: Callable[[], None] | None = None,
    ) -> None:
        self.conversation_id = conversation_id
        self.message_id = message_id
        self.source = source
        self.finished = finished  # stores how the reply ended, then tells its readers
        self.release = release  # gives back the client's slot (MAX_STREAMS_PER_CLIENT) at the end
        self.log = ReplyLog()
        self.started = time.perf_counter()
        self.stopping: str | None = None  # "stopped" or "interrupted": ended early, and why
        self.usage: Usage | None = None
        # What the last checkpoint stored: how many events, and the two texts up to them.
        self.saved = 0
        self.saved_text = ""
        self.saved_reasoning = ""
        self.saved_index: list[str] = []  # the events' lengths, as the database keeps them
        self.published = 0  # events sent to Redis
        self.refreshed_at = -float("inf")  # when its Redis stream's expiry was last pushed back

    def run(self) -> None:
        """Read the model's stream to its end (or until stopped), then have the reply stored."""
        end = self._write()
        self.finished(self, end)

    def stop(self, why: str = "stopped") -> None:
        """End the reply early: hang up on the model now, from any greenlet."""
        if self.stopping is None and self.log.end is None:
            self.stopping = why
            cancel = getattr(self.source, "cancel", None)
            if cancel is not None:
                cancel()  # a waiting read sees the connection end and unwinds

    def _write(self) -> End:
        log_ = self.log
        answer_carry = reasoning_carry = ""
        fair = TimeSlice()
        try:
            for item in self.source:
                fair.tick()
                if self.stopping is not None:
                    break
                if type(item) is str:
                    text, answer_carry = clean(item, answer_carry)
                    if text:
                        log_.add(text)
                elif type(item) is Reasoning:
                    thought, reasoning_carry = clean(item, reasoning_carry)
                    if thought:
                        log_.add(Reasoning(thought))
                else:
                    self.usage = item if isinstance(item, Usage) else None
                    break  # the usage (or None) is the last item
        except UpstreamError as error:
            if self.stopping is None:
                return End("error", message=error.message, error=error, reason=error.reason)
        except Exception as error:
            if self.stopping is None:
                # A bug: logged once with its traceback; readers get a plain sentence.
                log.error("unhandled %s while writing a reply", type(error).__name__, exc_info=error)
                failure = ApiError("The server hit an unexpected error; it has been logged.", 500)
                return End("error", message=INTERNAL_ERROR, error=failure, reason="internal")
        finally:
            self.source.close()
            for carry, kind in ((answer_carry, str), (reasoning_carry, Reasoning)):
                if carry:
                    log_.add(kind("\ufffd"))  # half a character the model never finished
        if self.stopping == "interrupted":
            return End("interrupted", message=INTERRUPTED, reason="interrupted")
        if self.stopping is not None:
            return End(self.stopping, reason=self.stopping)
        return End("complete", usage=self.usage)

    def checkpoint(self) -> dict[str, object] | None:
        """What is new since the last checkpoint, as the row's new values; None if nothing is."""
        events = self.log.events
        count = len(events)
        if count == self.saved:
            return None
        new: list[Event] = events[self.saved : count]
        self.saved_text += "".join(event for event in new if type(event) is str)
        self.saved_reasoning += "".join(event for event in new if type(event) is Reasoning)
        self.saved_index.append(",".join(str(-len(e) if type(e) is Reasoning else len(e)) for e in new))
        self.saved = count
        return {
            "id": self.message_id,
            "content": self.saved_text,
            "reasoning": self.saved_reasoning,
            "events": self.index(),
            "last_event": count,
        }

    def index(self) -> str:
        """The lengths of the events checkpointed so far (negative for reasoning), as JSON."""
        return "[" + ",".join(part for part in self.saved_index if part) + "]"
