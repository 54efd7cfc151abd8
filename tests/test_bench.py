"""The benchmark's floor relays answer as the service's plain-text route does, byte for byte."""

from __future__ import annotations

import asyncio

import pytest

from tests.bench.scenarios import Floor, Framework, Upstream, checked
from tests.support import fetch, fetch_many


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_the_floor_relays_every_delta_of_unpaced_and_paced_replies(api: str) -> None:
    for delay in (0.0, 0.005):
        upstream = Upstream(deltas=20, delay=delay)
        floor = Floor(upstream, api)
        try:
            results = asyncio.run(fetch_many(floor.port, floor.request, 10))
            one = asyncio.run(fetch(floor.port, floor.request))
        finally:
            floor.stop()
            upstream.stop()
        assert checked(results, upstream.expected) == 0
        assert one.body == b"".join(b" tok%d" % i for i in range(20))
        if delay:
            assert one.arrivals[-1] - one.ttfb >= 19 * delay * 0.8  # relayed as paced, not buffered


@pytest.mark.parametrize("app", ["bare", "flask_app"])
@pytest.mark.parametrize("api", ["chat", "responses"])
def test_the_floor_behind_gunicorn_and_flask_relays_every_delta_as_paced(api: str, app: str) -> None:
    upstream = Upstream(deltas=20, delay=0.005)
    try:
        relay = Framework(upstream, api, app)
        try:
            results = asyncio.run(fetch_many(relay.port, relay.request, 10))
            one = asyncio.run(fetch(relay.port, relay.request))
            log = relay.log_text()
        finally:
            relay.stop()
    finally:
        upstream.stop()
    assert checked(results, upstream.expected) == 0
    assert one.body == b"".join(b" tok%d" % i for i in range(20))
    assert one.arrivals[-1] - one.ttfb >= 19 * 0.005 * 0.8  # relayed as paced, not buffered
    assert "Traceback" not in log
