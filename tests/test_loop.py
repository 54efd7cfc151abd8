"""Work beside a request: gevent's loop when the worker patched the process, else threads."""

from __future__ import annotations

import threading

import gevent  # type: ignore[import-untyped]
import pytest

from app import loop

from .support import wait_until


def test_nothing_is_evented_until_the_worker_patches_the_process() -> None:
    assert loop.evented() is False  # pytest never patches: the tests run threads


def test_a_timer_fires_once_in_a_thread_and_a_cancelled_one_never() -> None:
    fired: list[str] = []
    witness = threading.Event()
    cancelled = loop.Timer(0.01, fired.append, "cancelled")
    cancelled.cancel()
    loop.Timer(0.02, fired.append, "kept")
    loop.Timer(0.2, witness.set)  # due well after both
    assert witness.wait(2.0)
    assert fired == ["kept"]


def test_under_gevent_a_timer_is_the_loops_and_spawn_a_greenlet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "evented", lambda: True)
    fired: list[str] = []
    threads = threading.active_count()
    cancelled = loop.Timer(0.01, fired.append, "cancelled")
    assert threading.active_count() == threads  # the loop's timer: no thread waits for it
    cancelled.cancel()
    loop.Timer(0.02, fired.append, "kept")
    loop.Timer(0.1, fired.append, "witness")
    loop.spawn(fired.append, "spawned")
    assert wait_until(lambda: "witness" in fired, timeout=2.0, sleep=gevent.sleep)
    assert fired == ["spawned", "kept", "witness"]


def test_the_loops_watchers_never_keep_it_running() -> None:
    timer = loop.watcher("timer", 1.0)
    try:
        assert timer.ref is False
    finally:
        timer.close()
