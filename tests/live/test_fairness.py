"""No stream holds up another: unpaced replies beside new requests, under gunicorn + gevent."""

from __future__ import annotations

import asyncio
import time

from ..support import SECRET_KEY, FakeUpstream, LiveServer, Result, Script, fetch, post

# One reply as fast as the network allows (a fast model, a cache). 20,000 deltas took the worker
# ~2 s once; joined per read and written with one send, they now take too little to tell.
BURST = ["x"] * 80_000


def test_unpaced_replies_hold_up_no_other_request(upstream_server: FakeUpstream) -> None:
    # A reply whose upstream always has data and whose client always has room never has to
    # wait: unless it lets the others run, they wait for it, and their upstream timeouts
    # expire although the model answered them.
    upstream_server.reset(Script())
    upstream_server.per_model = {"burst": Script(deltas=BURST, burst=True)}
    server = LiveServer(
        {
            "OPENAI_API_KEY": SECRET_KEY,
            "OPENAI_BASE_URL": upstream_server.base_url,
            "ALLOWED_MODELS": "gpt-4o-mini,burst",
            "UPSTREAM_TIMEOUT_S": "2",
        }
    )
    burst = post("/api/chat/stream", {"message": "hi", "model": "burst"})
    ask = post("/api/chat/stream", {"message": "hi"})
    ended: list[float] = []  # when each burst's reply was all in

    async def timed(request: bytes) -> Result:
        result = await fetch(server.port, request, pause=0.01)  # read slowly: a pause after each read
        ended.append(time.monotonic())
        return result

    async def run() -> tuple[list[Result], float, list[Result]]:
        bursts = [asyncio.ensure_future(timed(burst)) for _ in range(20)]
        deadline = time.monotonic() + 5.0
        while len(upstream_server.streams) < 20 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)  # until all 20 are under way
        others = list(await asyncio.gather(*(fetch(server.port, ask) for _ in range(20))))
        answered = time.monotonic()
        return others, answered, list(await asyncio.gather(*bursts))

    try:
        others, answered, bursts = asyncio.run(run())
    finally:
        server.stop()
        upstream_server.reset()
    assert [(r.status, r.body) for r in others] == [(200, b"Hello, world!")] * 20
    assert [(r.status, r.body) for r in bursts] == [(200, "".join(BURST).encode())] * 20
    # The new requests were answered while the bursts went on, not after them: without the
    # bursts letting the others run, at most one is still streaming by then (all 20, with it).
    still_streaming = sum(1 for at in ended if at > answered)
    assert still_streaming >= 10, f"only {still_streaming} of 20 bursts were still streaming"
