"""Counts kept where RATE_LIMIT_STORAGE_URI says: failed authentications and replies in flight.

``memory://`` counts per worker; Redis counts across workers and hosts. A Redis that is down
must not take the API with it: each worker then counts on its own until it is back.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import TypeVar

from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

log = logging.getLogger(__name__)

T = TypeVar("T")
SLOT_TTL_S = 600  # slots are counted in buckets this long (see Slots.take)
PREFIX = "chat"
# A Redis connection that is dead is given up on within a second (here and for the rate limit).
REDIS_TIMEOUTS: dict[str, str | int] = {"socket_connect_timeout": 1, "socket_timeout": 1}


class Counters:
    """A store of counters, shared or per worker, with this worker's memory as its fallback."""

    def __init__(self, uri: str) -> None:
        if uri.startswith("memory://"):
            self.shared: Storage = MemoryStorage()
        else:
            shared = storage_from_string(uri, wrap_exceptions=True, **REDIS_TIMEOUTS)
            assert isinstance(shared, Storage)  # a redis:// URI gives the synchronous kind
            self.shared = shared
        self.local = MemoryStorage()
        self._warned = False

    def pick(self, use: Callable[[Storage], T]) -> T:
        """Run ``use`` on the shared store, else on this worker's own."""
        try:
            return use(self.shared)
        except StorageError as error:
            if not self._warned:
                self._warned = True
                failure = type(error.storage_error).__name__
                log.warning("counting per worker: the shared store failed (%s)", failure)
            return use(self.local)


class FailureLimit:
    """Failed attempts per client, in fixed windows: ``60/minute`` and the like."""

    def __init__(self, counters: Counters, limit: str) -> None:
        self.item: RateLimitItem = parse(limit)
        self.counters = counters

    def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` may fail again, or None while it is under the limit."""

        def check(storage: Storage) -> int | None:
            window = FixedWindowRateLimiter(storage)
            if window.test(self.item, PREFIX, "auth", client):
                return None
            reset_at = window.get_window_stats(self.item, PREFIX, "auth", client).reset_time
            return max(1, math.ceil(reset_at - time.time()))

        return self.counters.pick(check)

    def fail(self, client: str) -> None:
        """Count one failed attempt by ``client``."""
        self.counters.pick(lambda store: FixedWindowRateLimiter(store).hit(self.item, PREFIX, "auth", client))


class Slots:
    """Replies in flight per client, at most ``cap`` at once."""

    def __init__(self, counters: Counters, cap: int) -> None:
        self.counters = counters
        self.cap = cap

    def take(self, client: str) -> Callable[[], None] | None:
        """Hold a slot for ``client``; the function that gives it back, or None when all are taken.

        Slots are counted in buckets of SLOT_TTL_S, each kept for two: a reply counts against
        the cap in the bucket it started in and the next one, and gives its slot back to the
        bucket it took it from. A count that expired under replies still in flight so never
        turns negative for the replies after them, and a worker that dies holding slots
        frees them within two buckets.
        """
        bucket = int(time.time() // SLOT_TTL_S)
        key = f"{PREFIX}/streams/{client}/{bucket}"
        earlier = f"{PREFIX}/streams/{client}/{bucket - 1}"
        store: list[Storage] = []

        def incr(storage: Storage) -> int:
            store.append(storage)
            return int(storage.incr(key, 2 * SLOT_TTL_S, 1)) + max(0, int(storage.get(earlier)))

        held = self.counters.pick(incr)
        storage = store[-1]
        if held > self.cap:
            self._give_back(storage, key)
            return None
        given_back: list[bool] = []

        def give_back() -> None:
            if not given_back:
                given_back.append(True)
                self._give_back(storage, key)

        return give_back

    def _give_back(self, storage: Storage, key: str) -> None:
        with contextlib.suppress(StorageError):  # the store went away: the expiry frees the slot
            storage.incr(key, 2 * SLOT_TTL_S, -1)
