"""One worker's replies: the ones it writes (jobs) and the ones it follows for its readers (feeds).

One ticker per worker does the periodic work for all of them, never the loop that reads a
model: every CHECKPOINT_S it stores what each running reply wrote, all in one transaction;
every STOP_CHECK_S it looks in the database for stop requests; with Redis, every FLUSH_S it
publishes every reply's new events in one round trip. With Redis, one blocking read per worker
follows every reply its readers read and the stop requests for the replies it writes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import redis
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from .. import metrics
from ..loop import spawn
from ..store import writers
from ..upstream.stream import Source
from . import store
from .feed import DB_POLL_S, LIVE_CHECK_S, Feed
from .job import Job
from .log import INTERRUPTED, End, ReplyLog
from .streams import PREFIX, REFRESH_S, STOPS, WAKE, Streams, unpack, unpack_end

log = logging.getLogger(__name__)

CHECKPOINT_S = 1.0  # a running reply's text is stored at least this often (and no more often)
STOP_CHECK_S = 0.25  # how often the database is asked for stop requests (a stop acts within 1 s)
FLUSH_S = 0.01  # how often new events go to Redis: well inside the 50 ms a reader may lag
# A reply whose checkpoints stopped for this long has lost its worker: UPSTREAM_TIMEOUT_S, as SPEC
# says, but never less than a few missed checkpoints (a busy database must not end a live reply).
MIN_STALE_S = 2.5 * CHECKPOINT_S
STOP_WAIT_S = 3.0  # how long a stop waits for the worker writing the reply to store it
STOP_POLL_S = 0.05
SHUTDOWN_POLL_S = 0.1


class Replies:
    """The replies of one worker, and the one ticker that checkpoints, publishes and follows them."""

    def __init__(self, db: sessionmaker[Session], config: Mapping[str, Any]) -> None:
        self.db = db
        self.stale_after = timedelta(seconds=max(config["UPSTREAM_TIMEOUT_S"], MIN_STALE_S))
        url = config["REDIS_URL"]
        self.streams = Streams(url) if url else None
        self.jobs: dict[str, Job] = {}
        self.feeds: dict[str, Feed] = {}
        # Ends the database refused (it was down): tried again at every checkpoint until stored,
        # and their rows kept alive meanwhile, so a short outage loses no reply.
        self.unstored: dict[str, tuple[str, dict[str, Any]]] = {}
        self._ticking = False
        self._reading = False
        self._db_failing = False

    # -- writing --

    def start(
        self, conversation_id: str, message_id: str, source: Source, release: Callable[[], None] | None
    ) -> Job:
        """Write the reply from ``source`` as the server's own work; ``release`` at its end."""
        job = Job(conversation_id, message_id, source, self.finished, release)
        self.jobs[message_id] = job
        metrics.RUNNING.inc()
        spawn(job.run)
        self._keep_ticking()
        if self.streams is not None:
            self._keep_reading()  # for stop requests from other workers
        return job

    def finished(self, job: Job, end: End) -> None:
        """Store how the job's reply ended, publish it, and only then tell its readers."""
        job.checkpoint()  # the texts and lengths up to the last event
        values = store.end_values(end, job.saved_text, job.saved_reasoning, job.index(), job.saved)
        try:
            if not store.finish(self.db, job.conversation_id, job.message_id, values):
                log.warning("reply %s had already ended when it was to be stored", job.message_id)
        except SQLAlchemyError as error:
            log.error(
                "could not store reply %s: the database failed (%s); trying again every second",
                job.message_id,
                type(error).__name__,
            )
            self.unstored[job.message_id] = (job.conversation_id, values)
        except Exception:
            log.exception("could not store how reply %s ended", job.message_id)
        if self.streams is not None:
            with self.streams.lock:
                self._publish([job], ended={job.message_id: end})
        job.log.finish(end)
        self.jobs.pop(job.message_id, None)
        if job.message_id in self.unstored:
            self._keep_ticking()
        metrics.RUNNING.dec()
        if job.release is not None:
            job.release()
        log.info(
            "reply %s ended status=%s events=%d chars=%d duration_ms=%.1f",
            job.message_id,
            end.status,
            len(job.log.events),
            len(job.saved_text),
            (time.perf_counter() - job.started) * 1000.0,
        )

    def stop(self, message_id: str) -> Job | None:
        """Stop the reply if this worker writes it; the job, or None."""
        job = self.jobs.get(message_id)
        if job is not None:
            job.stop()
        return job

    def stop_anywhere(self, reply: store.Stored) -> None:
        """Stop ``reply`` wherever it is written, and return once it is stored as ended.

        Written here: stopped at once. Elsewhere: asked through the database (its worker looks
        four times a second) and Redis (at once), then the row is watched; a worker that does
        not act on it within STOP_WAIT_S no longer writes it, whatever it does: stored as stopped
        here, its text as last checkpointed.
        """
        job = self.jobs.get(reply.id)
        if job is not None:
            job.stop()
            job.log.wait_end(threading.Event(), STOP_WAIT_S)  # stored before its end is told
            return
        if not store.request_stop(self.db, reply.id):
            return  # it ended meanwhile
        if self.streams is not None:
            self.streams.request_stop(reply.id)
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline:
            current = store.read(self.db, reply.id)
            if current is None or current.status != "streaming":
                return
            time.sleep(STOP_POLL_S)
        store.end_abandoned(self.db, reply, "stopped")

    # -- reading --

    def attach(self, reply: store.Stored) -> tuple[ReplyLog, Callable[[], None]]:
        """The log to read ``reply`` from, and what to call once done reading it."""
        job = self.jobs.get(reply.id)
        if job is not None:
            return job.log, nothing
        feed = self.feeds.get(reply.id)
        if feed is None:
            feed = Feed(reply)
            if feed.ended():
                return feed.log, nothing
            self.feeds[reply.id] = feed
            self._keep_ticking()
            if self.streams is not None:
                self._keep_reading(wake=True)
        feed.readers += 1
        return feed.log, lambda: self._detach(feed)

    def _detach(self, feed: Feed) -> None:
        feed.readers -= 1
        if feed.readers <= 0 and self.feeds.get(feed.message_id) is feed:
            del self.feeds[feed.message_id]

    def abandoned(self, reply: store.Stored) -> bool:
        """Has ``reply`` lost the worker writing it? (Then it is stored ``interrupted``.)"""
        if reply.id in self.jobs or not writers.is_abandoned(
            reply.status, reply.writer, reply.updated_at, self.stale_after
        ):
            return False
        store.end_abandoned(self.db, reply, "interrupted")
        return True

    def quiet(self) -> bool:
        """Are the worker's ticker and Redis reader both stopped (nothing left to serve)?"""
        return not (self._ticking or self._reading)

    # -- shutting down --

    def shutdown(self, deadline: float, stored_by: float) -> None:
        """Let the replies being written end by ``deadline`` (monotonic), then stop the rest as
        ``interrupted`` and wait for them to be stored, until ``stored_by`` at the latest."""
        while self.jobs and time.monotonic() < deadline:
            time.sleep(SHUTDOWN_POLL_S)
        for job in list(self.jobs.values()):
            job.stop("interrupted")
        while self.jobs and time.monotonic() < stored_by:
            time.sleep(0.01)

    # -- the ticker --

    def _keep_ticking(self) -> None:
        if not self._ticking:
            self._ticking = True
            spawn(self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        next_flush = now
        next_stops = now + STOP_CHECK_S
        next_checkpoint = now + CHECKPOINT_S
        while self.jobs or self.feeds or self.unstored:
            now = time.monotonic()
            try:
                if self.streams is not None and now >= next_flush:
                    next_flush = now + FLUSH_S
                    if self.jobs and self.streams.usable():
                        with self.streams.lock:
                            self._publish(list(self.jobs.values()))
                if now >= next_stops:
                    next_stops = now + STOP_CHECK_S
                    self._check_stops()
                if now >= next_checkpoint:
                    # At a fixed rate, so a checkpoint is never more than CHECKPOINT_S after the last.
                    next_checkpoint = max(next_checkpoint + CHECKPOINT_S, now)
                    self._checkpoint()
                self._poll_feeds(now)
                self._db_failing = False
            except SQLAlchemyError as error:
                if not self._db_failing:
                    self._db_failing = True
                    log.warning("reply checkpoints failed: the database failed (%s)", type(error).__name__)
            except Exception:
                log.exception("unexpected error in the replies' ticker")
            wake_at = min(next_stops, next_checkpoint, self._next_feed_check())
            if self.streams is not None and self.jobs:
                wake_at = min(wake_at, next_flush)
            time.sleep(max(0.0, wake_at - time.monotonic()))
        self._ticking = False
        if self.jobs or self.feeds or self.unstored:  # one came in as this ticker was stopping
            self._keep_ticking()

    def _publish(self, jobs: list[Job], ended: dict[str, End] | None = None) -> None:
        """Send the jobs' new events to Redis (the caller holds the streams' lock)."""
        assert self.streams is not None
        now = time.monotonic()
        batches = []
        for job in jobs:
            count = len(job.log.events)
            end = (ended or {}).get(job.message_id)
            if count == job.published and end is None:
                continue
            refresh = now >= job.refreshed_at + REFRESH_S
            if refresh:
                job.refreshed_at = now
            batches.append((job.message_id, job.log.events[job.published : count], count, end, refresh))
            job.published = count
        if batches:
            self.streams.publish(batches)

    def _check_stops(self) -> None:
        if not self.jobs:
            return
        for message_id in store.asked_to_stop(self.db, list(self.jobs)):
            job = self.jobs.get(message_id)
            if job is not None:
                job.stop()

    def _checkpoint(self) -> None:
        for message_id, (conversation_id, values) in list(self.unstored.items()):
            store.finish(self.db, conversation_id, message_id, values)  # raises while it is still down
            del self.unstored[message_id]
            log.info("reply %s is stored after all", message_id)
        changed, beating = [], list(self.unstored)
        for job in list(self.jobs.values()):
            row = job.checkpoint()
            if row is None:
                beating.append(job.message_id)
            else:
                changed.append(row)
        if changed or beating:
            store.checkpoint(self.db, changed, beating)
            self._check_stops()  # and whether a row it wrote has been ended by someone else

    def _next_feed_check(self) -> float:
        return min((feed.next_check for feed in self.feeds.values()), default=float("inf"))

    def _poll_feeds(self, now: float) -> None:
        """Read the database for the feeds that are due, in one query: all they get without Redis,
        and with it whether their writer still lives (and whatever Redis could not bring)."""
        following_redis = self.streams is not None and self.streams.usable() and self._reading
        due = [feed for feed in list(self.feeds.values()) if feed.next_check <= now]
        if not due:
            return
        rows = store.read_many(self.db, [feed.message_id for feed in due])
        for feed in due:
            feed.next_check = now + (LIVE_CHECK_S if following_redis else DB_POLL_S)
            reply = rows.get(feed.message_id)
            if reply is None:
                feed.log.finish(End("stopped"))  # deleted with its conversation
            elif self.abandoned(reply):
                feed.refresh(reply)
                feed.log.finish(End("interrupted", message=INTERRUPTED))
            else:
                feed.refresh(reply)
            if feed.ended():
                self.feeds.pop(feed.message_id, None)

    # -- following Redis --

    def _keep_reading(self, wake: bool = False) -> None:
        assert self.streams is not None
        if not self._reading:
            self._reading = True
            spawn(self._read)
        elif wake:
            self.streams.wake(writers.worker_id())

    def _read(self) -> None:
        """Follow, with one blocking read, every reply this worker's readers read and the stop
        requests for the replies it writes."""
        assert self.streams is not None
        streams = self.streams
        wake_key = WAKE + writers.worker_id()
        stops = wake = None
        while self.jobs or self.feeds:
            if not streams.usable():
                time.sleep(max(0.0, streams.down_until - time.monotonic()))
                continue
            try:
                if stops is None or wake is None:
                    stops, wake = streams.last_id(STOPS), streams.last_id(wake_key)
                cursors = {STOPS: stops, wake_key: wake}
                for feed in list(self.feeds.values()):
                    if not feed.ended() and not feed.gap:
                        cursors[PREFIX + feed.message_id] = f"0-{feed.cursor}"
                answer = streams.read(cursors)
            except redis.RedisError as error:
                streams.failed(error)
                stops = wake = None
                continue
            streams.worked()
            for name, entries in answer:
                if name == STOPS:
                    for entry_id, fields in entries:
                        stops = entry_id
                        job = self.jobs.get(fields.get("id", ""))
                        if job is not None:
                            job.stop()
                elif name == wake_key:
                    wake = entries[-1][0]
                else:
                    self._take(name.removeprefix(PREFIX), entries)
        self._reading = False
        if self.jobs or self.feeds:
            self._keep_reading()

    def _take(self, message_id: str, entries: list[tuple[str, dict[str, str]]]) -> None:
        feed = self.feeds.get(message_id)
        if feed is None:
            return
        for entry_id, fields in entries:
            last = int(entry_id.partition("-")[2])
            if "end" in fields:
                taken = feed.take(last, [], unpack_end(fields["end"]))
            else:
                taken = feed.take(last, unpack(fields["e"]), None)
            if not taken:
                feed.gap = True  # events are missing: the ticker reads the database first
                feed.next_check = 0.0
                return
        if feed.ended():
            self.feeds.pop(message_id, None)


def nothing() -> None:
    """Nothing to let go of."""
