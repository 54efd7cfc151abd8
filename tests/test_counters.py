"""Counters: replies in flight per client stay capped, whatever the expiry of their counts."""

from __future__ import annotations

import time

import pytest

from app import counters
from app.counters import Counters, Slots


def at_next_bucket() -> None:
    """Sleep until a new bucket of slots has just begun."""
    size = counters.SLOT_TTL_S
    time.sleep(size - time.time() % size + 0.02)


def test_replies_in_flight_stay_capped_across_buckets_and_expiries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(counters, "SLOT_TTL_S", 0.4)
    slots = Slots(Counters("memory://"), cap=2)
    at_next_bucket()
    first, second = slots.take("ip:a"), slots.take("ip:a")
    assert first is not None and second is not None
    assert slots.take("ip:a") is None  # the cap
    assert slots.take("ip:b") is not None  # another client counts apart
    at_next_bucket()
    assert slots.take("ip:a") is None  # the two replies still in flight count in the next bucket
    first()
    second()
    third = slots.take("ip:a")
    assert third is not None
    at_next_bucket()
    at_next_bucket()  # the first bucket's count has expired; giving back to it changes nothing
    third()
    held = [slots.take("ip:a") for _ in range(3)]
    assert [h is not None for h in held] == [True, True, False]  # never more than the cap
