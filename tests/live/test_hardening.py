"""Slow and departing clients, and a short soak: nothing grows, nothing is left open."""

from __future__ import annotations

import json
import socket
import time

import pytest

from ..soak import soak
from ..support import SECRET_KEY, FakeUpstream, LiveServer, Script


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@pytest.mark.parametrize("accept", ["text/plain", "text/event-stream"])
def test_a_client_that_stops_reading_holds_back_the_upstream(
    upstream_server: FakeUpstream, accept: str
) -> None:
    deltas = ["x" * 2000] * 20_000  # 40 MB of reply, unpaced: far more than socket buffers hold
    upstream_server.reset(Script(deltas=deltas))
    server = LiveServer({"OPENAI_API_KEY": SECRET_KEY, "OPENAI_BASE_URL": upstream_server.base_url})
    try:
        worker = server.worker_pid()
        before = rss_kb(worker)
        body = json.dumps({"message": "hi"}).encode()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, never read
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(
            b"POST /api/chat/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Accept: %s\r\nContent-Length: %d\r\n\r\n%s" % (accept.encode(), len(body), body)
        )
        time.sleep(2.0)
        stream = upstream_server.streams[0]
        grown_kb = rss_kb(worker) - before
        # The relay stopped reading the upstream once the client's socket was full: most of
        # the reply is still at the upstream, and the worker did not buffer it.
        assert stream.deltas_sent < len(deltas) // 2, stream.deltas_sent
        assert grown_kb < 5 * 1024, grown_kb
        sock.close()
        assert upstream_server.wait_until(lambda: upstream_server.open_streams() == 0, timeout=2.0)
    finally:
        server.stop()


def test_a_short_soak_leaves_nothing_behind() -> None:
    report = soak(streams=1000, warmup=300)
    before, after = report["before"], report["after"]
    assert report["outcomes"] == {
        "complete (text)": 250,
        "complete (sse)": 250,
        "left": 250,
        "in-band error": 125,
        "status 502": 125,
    }
    assert after["upstream_open"] == 0
    assert after["fds_besides_pool"] <= before["fds_besides_pool"] + 2
    assert after["pooled_upstream"] <= 32 * 8  # the pools keep at most 8 idle connections each
    assert after["greenlets"] <= before["greenlets"] + 4
    assert after["rss_mb"] - before["rss_mb"] < 20  # loose: the full soak holds it to 10 MB
