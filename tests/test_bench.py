"""The benchmark's floor relays answer as the service's plain-text route does, byte for byte."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.bench.scenarios import Floor, Framework, Upstream, checked
from tests.support import fetch, fetch_many

RELAYS: dict[str, Any] = {
    "floor": Floor,
    "behind gunicorn": partial(Framework, app="bare"),
    "behind gunicorn + Flask": partial(Framework, app="flask"),
}
HEALTH_TYPES = {"behind gunicorn": "text/plain", "behind gunicorn + Flask": "text/html; charset=utf-8"}


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize(
    "relay_name",
    [pytest.param(name, marks=[pytest.mark.live] if name in HEALTH_TYPES else []) for name in RELAYS],
)
def test_the_floor_relays_every_delta_of_unpaced_and_paced_replies(relay_name: str, api: str) -> None:
    for delay in (0.0, 0.005):
        upstream = Upstream(deltas=20, delay=delay)
        try:
            relay = RELAYS[relay_name](upstream, api)
            try:
                results = asyncio.run(fetch_many(relay.port, relay.request, 10))
                one = asyncio.run(fetch(relay.port, relay.request))
                if relay_name in HEALTH_TYPES:  # served by gunicorn: the app asked for, as configured
                    health = requests.get(f"{relay.url}/healthz", timeout=5)
                    assert health.headers["Content-Type"] == HEALTH_TYPES[relay_name]
                    assert "Traceback" not in relay.log_text()
                    # The service's gunicorn.conf.py ran: it migrates the database before workers start.
                    assert Path(relay.folder.name, "chat.db").exists()
            finally:
                relay.stop()
        finally:
            upstream.stop()
        assert checked(results, upstream.expected) == 0
        assert one.body == b"".join(b" tok%d" % i for i in range(20))
        if delay:
            assert one.arrivals[-1] - one.ttfb >= 19 * delay * 0.8  # relayed as paced, not buffered
