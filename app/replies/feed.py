"""A reply another worker (or host) writes, followed for this worker's readers: one feed per reply
per worker, however many readers it has.

It starts from the database's checkpoint, then takes the reply's events from Redis as they are
published, or from the database's checkpoints when there is no Redis (or Redis is away). Either
way its log numbers the events as the writer did.
"""

from __future__ import annotations

import time

from .log import End, Event, ReplyLog
from .store import Stored

DB_POLL_S = 0.2  # following the database: how often the row is read
LIVE_CHECK_S = 1.0  # following Redis: how often the database is asked whether the writer lives


class Feed:
    """One followed reply: its log, its readers, and when the database is next read for it."""

    def __init__(self, stored: Stored) -> None:
        self.message_id = stored.id
        self.log = ReplyLog(stored.rebuilt())
        self.readers = 0
        self.next_check = time.monotonic()
        # Events are missing before what Redis brought: it is not read again until the database
        # has brought the feed past the gap (else the same entries come back at once, for ever).
        self.gap = False
        end = stored.end()
        if end is not None:
            self.log.finish(end)

    @property
    def cursor(self) -> int:
        """How many of the reply's events this worker has."""
        return len(self.log.events)

    def ended(self) -> bool:
        return self.log.end is not None

    def take(self, last: int, events: list[Event], end: End | None) -> bool:
        """Add a Redis entry's events (the last of them numbered ``last``) or its end (numbered
        ``last``); False when events before it are missing here (read the database first)."""
        have = self.cursor
        if end is not None:
            if last != have + 1:
                return last <= have  # an end past missing events waits for them
            self.log.finish(end)
            return True
        first = last - len(events) + 1
        if first > have + 1:
            return False
        if last > have:
            self.log.extend(events[have - first + 1 :])
        return True

    def refresh(self, stored: Stored) -> None:
        """Add what the database has beyond this worker's events, and the end once it is stored."""
        if stored.last_event > self.cursor:
            self.log.extend(stored.rebuilt(after=self.cursor))
        self.gap = False
        end = stored.end()
        if end is not None and stored.last_event <= self.cursor:
            self.log.finish(end)
