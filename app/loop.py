"""Work beside a request: on gevent's event loop under gunicorn's gevent worker, else in threads.

The one module that knows gevent. The worker patches the standard library before the app is
imported (the app never patches anything); what runs here asks whether it was patched. Under the
worker, background work is a bare greenlet and a deadline is a timer of the loop, with no greenlet
of its own: a greenlet and a lock for each request cost 6% of a stream's opening, measured. With
no gevent (the tests, the command line) they are threads, which coverage follows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import gevent  # type: ignore[import-untyped]
from gevent import monkey


def evented() -> bool:
    """Is this process served by gevent's loop (gunicorn's gevent worker patched it)?"""
    return bool(monkey.is_module_patched("socket"))


def spawn(work: Callable[..., object], *args: Any) -> None:
    """Run ``work(*args)`` beside the caller: a greenlet under gevent, else a daemon thread."""
    if evented():
        gevent.spawn(work, *args)
    else:
        threading.Thread(target=work, args=args, daemon=True).start()


def watcher(kind: str, *args: Any) -> Any:
    """One of the loop's own watchers (``"io"``: fd, events; ``"timer"``: after, repeat) that never
    keeps the loop running by itself. Its callback runs in the loop: it may look, not wait."""
    made = getattr(gevent.get_hub().loop, kind)(*args)
    made.ref = False
    return made


class Timer:
    """``fire(*args)`` once after ``seconds``, unless cancelled first."""

    def __init__(self, seconds: float, fire: Callable[..., object], *args: Any) -> None:
        self._timer: Any = None
        self._cancelled: threading.Event | None = None
        if evented():
            self._timer = watcher("timer", seconds)
            self._timer.start(fire, *args)
        else:
            self._cancelled = threading.Event()
            spawn(self._wait, seconds, fire, args)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        elif self._cancelled is not None:
            self._cancelled.set()

    def _wait(self, seconds: float, fire: Callable[..., object], args: tuple[Any, ...]) -> None:
        assert self._cancelled is not None
        if not self._cancelled.wait(seconds):
            fire(*args)
