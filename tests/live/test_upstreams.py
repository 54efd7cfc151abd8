"""Real upstreams under gunicorn + gevent: models that think before the first delta, gateways that
hold their headers until it, and clients that leave meanwhile."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from ..support import SECRET_KEY, FakeUpstream, LiveServer, Script

ASK = {"message": "Think hard, then say hello"}
WAIT_S = 1.0  # FIRST_DELTA_WAIT_S
PING_S = 0.5  # SSE_PING_S


@pytest.fixture(scope="module", params=["chat", "responses"])
def thinking_server(request: pytest.FixtureRequest, upstream_server: FakeUpstream) -> Iterator[LiveServer]:
    server = LiveServer(
        {
            "OPENAI_API_KEY": SECRET_KEY,
            "OPENAI_BASE_URL": upstream_server.base_url,
            "OPENAI_API": request.param,
            "UPSTREAM_TIMEOUT_S": "30",
            "FIRST_DELTA_WAIT_S": str(WAIT_S),
            "SSE_PING_S": str(PING_S),
            "LOG_FORMAT": "json",
        }
    )
    yield server
    server.stop()


FRAMINGS = {
    "text": ("/api/chat/stream", "text/plain"),
    "sse": ("/api/chat/stream", "text/event-stream"),
    "json": ("/api/chat", "application/json"),
}


def send_request(server: LiveServer, framing: str, request_id: str) -> socket.socket:
    """A chat request on a raw socket, so the test decides exactly when to hang up."""
    path, accept = FRAMINGS[framing]
    body = json.dumps(ASK).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: {accept}\r\n"
        f"X-Request-ID: {request_id}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


def arrivals(sock: socket.socket, until: bytes) -> list[tuple[float, bytes]]:
    """What the socket receives, each read with its time, until ``until`` has come."""
    started = time.monotonic()
    received: list[tuple[float, bytes]] = []
    while until not in b"".join(data for _, data in received):
        data = sock.recv(65536)
        assert data, b"".join(data for _, data in received)
        received.append((time.monotonic() - started, data))
    return received


SILENT_STARTS = {
    "headers-held": Script(headers_delay=20),  # a gateway that sends its headers with the first token
    "after-headers": Script(first_delay=20),  # headers at once, then a model that thinks
}


@pytest.mark.parametrize("framing", list(FRAMINGS))
@pytest.mark.parametrize(("start", "leave_after"), [(s, t) for s in SILENT_STARTS for t in (0.3, 1.5)])
def test_a_client_leaving_during_a_silent_start_closes_the_upstream_at_once(
    thinking_server: LiveServer, upstream: FakeUpstream, framing: str, start: str, leave_after: float
) -> None:
    upstream.script = SILENT_STARTS[start]
    request_id = f"leave-{start}-{framing}-{time.monotonic_ns()}"
    sock = send_request(thinking_server, framing, request_id)
    assert upstream.wait_until(lambda: upstream.open_streams() == 1, timeout=2.0)
    time.sleep(leave_after)
    started = framing != "json" and leave_after > WAIT_S  # the stream response started after the wait
    if started:
        assert b" 200 OK\r\n" in sock.recv(65536)
    sock.close()
    hung_up = time.monotonic()
    assert upstream.wait_until(lambda: upstream.open_streams() == 0, timeout=2.0)
    closed_at = upstream.streams[0].closed_at
    assert closed_at is not None and closed_at - hung_up < 1.0, closed_at - hung_up
    line = thinking_server.wait_for_access_line(request_id, timeout=1.0)  # written when the client left
    assert (line["status"], line["outcome"]) == (200 if started else 499, "disconnected")
    assert line["duration_ms"] < (leave_after + 1.0) * 1000
    assert len(thinking_server.settled_access_lines(request_id)) == 1


def test_pings_flow_while_a_model_thinks_past_the_wait(
    thinking_server: LiveServer, upstream: FakeUpstream
) -> None:
    upstream.script = Script(first_delay=3.0)
    request_id = f"think-{time.monotonic_ns()}"
    sock = send_request(thinking_server, "sse", request_id)
    received = arrivals(sock, b'"type":"done"')
    sock.close()
    body = b"".join(data for _, data in received)
    assert body.startswith(b"HTTP/1.1 200 OK\r\n")
    headers_at = next(at for at, data in received if b"\r\n\r\n" in data)
    metadata_at = next(at for at, data in received if b'"type":"metadata"' in data)
    pings_at = [at for at, data in received if b": ping" in data]
    answer_at = next(at for at, data in received if b"Hello" in data)
    assert WAIT_S * 0.9 < headers_at < WAIT_S + 0.4  # not before the wait, not after the model
    assert metadata_at < WAIT_S + 0.4
    assert len(pings_at) >= 3  # every PING_S of silence from then on, until the model speaks
    assert WAIT_S + PING_S * 0.9 < pings_at[0] < WAIT_S + PING_S + 0.4
    assert answer_at > 2.9
    line = thinking_server.wait_for_access_line(request_id)
    assert (line["status"], line["outcome"]) == (200, "complete")
    assert line["ttft_ms"] > 2900  # the time to the first answer text, not to the start


def test_plain_text_headers_go_out_after_the_wait(
    thinking_server: LiveServer, upstream: FakeUpstream
) -> None:
    upstream.script = Script(first_delay=2.0)
    sock = send_request(thinking_server, "text", f"plain-{time.monotonic_ns()}")
    received = arrivals(sock, b"!")
    sock.close()
    headers_at = next(at for at, data in received if b"\r\n\r\n" in data)
    answer_at = next(at for at, data in received if b"Hello" in data)
    assert WAIT_S * 0.9 < headers_at < WAIT_S + 0.4
    assert answer_at > 1.9


def test_reasoning_streams_as_it_comes_and_keeps_the_stream_busy(
    thinking_server: LiveServer, upstream: FakeUpstream
) -> None:
    upstream.script = Script(reasoning=["Let", " me", " see", " it", "."], delay=0.3)
    sock = send_request(thinking_server, "sse", f"reason-{time.monotonic_ns()}")
    received = arrivals(sock, b'"type":"done"')
    sock.close()
    thoughts = [at for at, data in received if b'"type":"reasoning"' in data]
    assert len(thoughts) == 5 and thoughts[4] - thoughts[0] > 1.0  # each as the model sent it
    assert not any(b": ping" in data for _, data in received)  # 1.2 s of thinking, no 0.5 s silence
