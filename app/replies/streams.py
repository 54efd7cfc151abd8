"""Replies across workers and hosts through Redis: a Redis Stream per reply, and one for stops.

A reply's stream holds its events in batches (a worker publishes all its replies' new events
every FLUSH_S in one round trip, never a command per delta). An entry's id is ``0-<id of its
last event>``, so a reader resumes after any event with a plain XREAD and no bookkeeping of
Redis's own ids. The stream is capped at MAXLEN entries (a reader that far behind catches up
from the database's checkpoint) and expires ENDED_TTL_S after the reply ended.

Redis that goes away costs no reply: publishing and reading fail quietly (one warning per
outage) and are tried again after RETRY_S; meanwhile readers follow the database.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import redis

from ..upstream.stream import Reasoning, Usage
from .log import End, Event

log = logging.getLogger(__name__)

PREFIX = "chat:reply:"
STOPS = "chat:stops"  # stop requests: every worker reads them, the one writing the reply acts
WAKE = "chat:wake:"  # one per worker: wakes its blocking read when it has a new reply to follow
MAXLEN = 2000  # entries per reply: at one entry per FLUSH_S, tens of seconds of events
STOPS_MAXLEN = 1000
RUNNING_TTL_S = 600  # a running reply's stream outlives a dead writer by at most this long
REFRESH_S = 60  # how often a running reply's expiry is pushed back
ENDED_TTL_S = 65  # an ended reply's events stay at least a minute for readers coming back
WAKE_TTL_S = 60
BLOCK_MS = 1000  # the longest a worker's read waits for anything
RETRY_S = 2.0  # how long Redis is left alone after it failed
TIMEOUTS: dict[str, Any] = {"socket_connect_timeout": 1, "socket_timeout": 1}
# All the replies of one flush in one command: sent as a pipeline of XADDs, building and reading
# them cost the worker 9.4 us per reply; as this script's arguments, 2.8 us (measured with 100
# replies a flush against a real redis-server). Per reply: the entry's id and events, the end's id
# and end, and the seconds to expire in (0: leave as is).
PUBLISH = """
for i = 1, #KEYS do
  local at = 2 + (i - 1) * 5
  if ARGV[at + 1] ~= '' then
    redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[1], ARGV[at], 'e', ARGV[at + 1])
  end
  if ARGV[at + 3] ~= '' then
    redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[1], ARGV[at + 2], 'end', ARGV[at + 3])
  end
  if ARGV[at + 4] ~= '0' then
    redis.call('EXPIRE', KEYS[i], ARGV[at + 4])
  end
end
return #KEYS
"""


def key(message_id: str) -> str:
    return PREFIX + message_id


def pack(events: Iterable[Event]) -> str:
    """Events as an entry keeps them: answer text as a string, reasoning as a one-string list."""
    return json.dumps([[e] if type(e) is Reasoning else e for e in events], ensure_ascii=False)


def unpack(data: str) -> list[Event]:
    return [Reasoning(item[0]) if isinstance(item, list) else item for item in json.loads(data)]


def pack_end(end: End) -> str:
    usage = [end.usage.input_tokens, end.usage.output_tokens] if end.usage else None
    return json.dumps({"status": end.status, "usage": usage, "message": end.message}, ensure_ascii=False)


def unpack_end(data: str) -> End:
    fields = json.loads(data)
    usage = Usage(*fields["usage"]) if fields.get("usage") else None
    return End(fields["status"], usage=usage, message=fields.get("message"))


class Streams:
    """This worker's door to Redis: publishing replies, asking for stops, and reading both."""

    def __init__(self, url: str) -> None:
        self.redis = redis.Redis.from_url(url, decode_responses=True, **TIMEOUTS)
        # The blocking read has a connection of its own, with room for its wait.
        self.reading = redis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=1, socket_timeout=BLOCK_MS / 1000 + 2
        )
        self.lock = threading.Lock()  # one publisher at a time: entry ids must arrive in order
        self.publishing = self.redis.register_script(PUBLISH)
        self.down_until = 0.0
        self._down = False

    def usable(self) -> bool:
        """Is Redis worth trying now (not failed within the last RETRY_S)?"""
        return time.monotonic() >= self.down_until

    def failed(self, error: Exception) -> None:
        """Leave Redis alone for a while; say so once per outage."""
        self.down_until = time.monotonic() + RETRY_S
        if not self._down:
            self._down = True
            log.warning(
                "Redis is unreachable (%s): replies go on being written and stored; "
                "readers on other workers follow the database until it is back",
                type(error).__name__,
            )

    def worked(self) -> None:
        """Redis answered: once past the wait after a failure, the outage is over."""
        if time.monotonic() >= self.down_until:  # not a command sent just before it failed
            self._down = False

    def publish(self, batches: Sequence[tuple[str, list[Event], int, End | None, bool]]) -> bool:
        """Send each reply's new events (``(message id, events, id of the last one, end, refresh)``)
        in one round trip; False when Redis failed."""
        if not self.usable():
            return False
        keys: list[str] = []
        args: list[str | int] = [MAXLEN]
        for message_id, events, last, end, refresh in batches:
            keys.append(key(message_id))
            ttl = ENDED_TTL_S if end is not None else RUNNING_TTL_S if refresh else 0
            args += [f"0-{last}", pack(events) if events else ""]
            args += [f"0-{last + 1}", "" if end is None else pack_end(end), ttl]
        try:
            self.publishing(keys=keys, args=args)
        except redis.RedisError as error:
            self.failed(error)
            return False
        self.worked()
        return True

    def request_stop(self, message_id: str) -> bool:
        """Tell every worker to stop ``message_id`` (the one writing it will)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(STOPS, {"id": message_id}, maxlen=STOPS_MAXLEN, approximate=True)
        return self._run(pipe)

    def wake(self, worker: str) -> bool:
        """Wake ``worker``'s blocking read, to read a new reply's stream too."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(WAKE + worker, {"w": "1"}, maxlen=1, approximate=False)
        pipe.expire(WAKE + worker, WAKE_TTL_S)
        return self._run(pipe)

    def last_id(self, name: str) -> str:
        """The id of the stream's newest entry (reading starts after it), or 0-0."""
        newest: Any = self.reading.xrevrange(name, count=1)
        return str(newest[0][0]) if newest else "0-0"

    def read(self, cursors: dict[str, str]) -> list[tuple[str, list[tuple[str, dict[str, str]]]]]:
        """Entries after each stream's cursor, waiting up to BLOCK_MS for any (raises RedisError)."""
        answer: Any = self.reading.xread(dict(cursors), block=BLOCK_MS, count=500)  # type: ignore[arg-type]
        return answer or []

    def _run(self, pipe: Any) -> bool:
        if not self.usable():
            return False
        try:
            pipe.execute()
        except redis.RedisError as error:
            self.failed(error)
            return False
        self.worked()
        return True

    def close(self) -> None:
        self.redis.close()
        self.reading.close()
