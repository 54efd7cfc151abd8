"""The one way the tests wait for something another thread, greenlet or process is doing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 5.0,
    sleep: Callable[[float], object] = time.sleep,
    interval: float = 0.005,
) -> T | Literal[False]:
    """Ask ``predicate()`` every ``interval`` seconds until it answers something true, and return
    that answer; False if it has not after ``timeout`` seconds. ``sleep=gevent.sleep`` lets gevent's
    loop run meanwhile, for what only happens on that loop."""
    deadline = time.monotonic() + timeout
    while True:
        answer = predicate()
        if answer:
            return answer
        if time.monotonic() >= deadline:
            return False
        sleep(interval)
