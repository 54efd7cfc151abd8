"""What only a real server shows: chunks on the wire as they arrive, hang-ups, the access line's timing."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from app.upstream.demo import compose, pieces

from ..support import FakeUpstream, LiveServer, Script, fetch_many, post

ASK = {"message": "Tell me a story about a robot"}


def timed_chunks(response: requests.Response) -> list[tuple[float, bytes]]:
    """Each chunk as the client received it, with its arrival time."""
    return [(time.monotonic(), chunk) for chunk in response.iter_content(chunk_size=None)]


def test_demo_reply_grows_word_by_word(demo_server: LiveServer) -> None:
    started = time.monotonic()
    with requests.post(f"{demo_server.url}/api/chat/stream", json=ASK, stream=True, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in response.headers
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert response.headers["X-Accel-Buffering"] == "no"
        assert response.headers["Cache-Control"] == "no-cache"
        arrivals = timed_chunks(response)
    body = b"".join(chunk for _, chunk in arrivals).decode()
    words = pieces(body)
    assert body == requests.post(f"{demo_server.url}/api/chat", json=ASK, timeout=10).json()["reply"]
    # One word per chunk, spread over the demo model's 40 ms pauses: not one buffered lump.
    assert len(arrivals) >= len(words) * 0.8
    assert arrivals[0][1].decode() == words[0]
    assert arrivals[-1][0] - arrivals[0][0] >= 0.04 * (len(words) - 1) * 0.8
    assert arrivals[0][0] - started < 0.5


def test_upstream_pacing_reaches_the_client(openai_server: LiveServer, upstream: FakeUpstream) -> None:
    deltas = [f"w{i} " for i in range(8)]
    upstream.script = Script(deltas=deltas, delay=0.1)
    with requests.post(f"{openai_server.url}/api/chat/stream", json=ASK, stream=True, timeout=10) as response:
        arrivals = timed_chunks(response)
    assert [chunk.decode() for _, chunk in arrivals] == deltas
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
    assert all(gap > 0.05 for gap in gaps), gaps  # each delta left as soon as it came


def test_a_departed_client_closes_the_upstream(openai_server: LiveServer, upstream: FakeUpstream) -> None:
    upstream.script = Script(deltas=[f"w{i} " for i in range(400)], delay=0.02)
    response = requests.post(f"{openai_server.url}/api/chat/stream", json=ASK, stream=True, timeout=10)
    request_id = response.headers["X-Request-ID"]
    chunks = response.iter_content(chunk_size=None)
    assert [next(chunks) for _ in range(3)] == [b"w0 ", b"w1 ", b"w2 "]
    response.close()
    hung_up = time.monotonic()
    assert upstream.wait_until(lambda: upstream.open_streams() == 0, timeout=2.0)
    assert upstream.streams[0].closed_at is not None
    assert upstream.streams[0].closed_at - hung_up < 1.0
    assert upstream.streams[0].deltas_sent < 400
    line = openai_server.wait_for_access_line(request_id)
    assert line["outcome"] == "disconnected" and line["status"] == 200
    assert len(openai_server.settled_access_lines(request_id)) == 1


def open_request(server: LiveServer, path: str, request_id: str) -> socket.socket:
    """Send a chat request on a raw socket, so the test decides exactly when to hang up."""
    body = json.dumps(ASK).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-Request-ID: {request_id}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


SILENCES = [  # within FIRST_DELTA_WAIT_S (10 s): the response has not started
    ("/api/chat/stream", Script(first_delay=30), b""),
    ("/api/chat/stream", Script(stall_after=2), b"Hello"),
    ("/api/chat", Script(stall_after=2), b""),
]


@pytest.mark.parametrize(
    ("path", "script", "seen"), SILENCES, ids=["before-first-delta", "mid-stream", "json"]
)
def test_a_client_leaving_during_a_silence_closes_the_upstream(
    openai_server: LiveServer, upstream: FakeUpstream, path: str, script: Script, seen: bytes
) -> None:
    upstream.script = script
    request_id = f"silence-{time.monotonic_ns()}"
    sock = open_request(openai_server, path, request_id)
    received = b""
    while seen not in received.partition(b"\r\n\r\n")[2]:
        received += sock.recv(4096)
    assert upstream.wait_until(lambda: upstream.open_streams() == 1, timeout=2.0)
    time.sleep(0.2)  # the model is silent now
    sock.close()
    hung_up = time.monotonic()
    assert upstream.wait_until(lambda: upstream.open_streams() == 0, timeout=2.0)
    closed_at = upstream.streams[0].closed_at
    assert closed_at is not None and closed_at - hung_up < 1.0
    line = openai_server.wait_for_access_line(request_id)
    assert line["outcome"] == "disconnected"
    assert line["status"] == (200 if seen else 499)  # 499: the client left before the response started
    assert len(openai_server.settled_access_lines(request_id)) == 1


def test_a_client_leaving_before_the_upstream_headers_is_let_go_at_once(
    openai_server: LiveServer, upstream: FakeUpstream
) -> None:
    upstream.script = Script(deltas=[f"w{i} " for i in range(40)], delay=0.05, headers_delay=20)
    request_id = f"early-{time.monotonic_ns()}"
    sock = open_request(openai_server, "/api/chat/stream", request_id)
    assert upstream.wait_until(lambda: upstream.open_streams() == 1, timeout=2.0)
    time.sleep(0.1)
    sock.close()  # the upstream has not answered yet, not even its headers
    hung_up = time.monotonic()
    assert upstream.wait_until(lambda: upstream.open_streams() == 0, timeout=2.0)
    stream = upstream.streams[0]
    assert (
        stream.closed_at is not None and stream.closed_at - hung_up < 1.0
    )  # not 20 s later, with the headers
    assert stream.deltas_sent == 0
    line = openai_server.wait_for_access_line(request_id)
    assert (line["status"], line["outcome"]) == (499, "disconnected")


def test_a_chunked_body_over_the_limit_is_413(demo_server: LiveServer) -> None:
    def chunks(size: int) -> Iterator[bytes]:
        yield b'{"message": "hi", "pad": "'
        for _ in range(size // 65536):
            yield b"a" * 65536
        yield b'"}'

    headers = {"Content-Type": "application/json"}
    url = f"{demo_server.url}/api/chat"
    big = requests.post(url, data=chunks(3 * 1024 * 1024), headers=headers, timeout=10)
    assert big.status_code == 413
    assert big.json() == {"error": "The request body is larger than the 1 MiB limit."}
    small = requests.post(url, data=chunks(512 * 1024), headers=headers, timeout=10)
    assert small.status_code == 200 and small.json()["reply"]


def test_a_bad_setting_stops_start_up_with_one_sentence() -> None:
    with pytest.raises(RuntimeError) as caught:
        LiveServer({"UPSTREAM_TIMEOUT_S": "soon"})
    output = str(caught.value)
    assert "error: UPSTREAM_TIMEOUT_S must be a number from 0.1 to 3600; got 'soon'." in output
    assert "Traceback" not in output


def test_the_access_line_is_written_when_the_stream_ends(
    openai_server: LiveServer, upstream: FakeUpstream
) -> None:
    upstream.script = Script(deltas=[f"w{i} " for i in range(10)], delay=0.05, first_delay=0.1)
    started = time.monotonic()
    with requests.post(f"{openai_server.url}/api/chat/stream", json=ASK, stream=True, timeout=10) as response:
        request_id = response.headers["X-Request-ID"]
        chunks = response.iter_content(chunk_size=None)
        next(chunks)
        assert openai_server.access_lines(request_id) == []  # headers and a chunk are out; not over yet
        rest = list(chunks)
    elapsed_ms = (time.monotonic() - started) * 1000
    line = openai_server.wait_for_access_line(request_id)
    assert len(rest) == 9
    assert line["path"] == "/api/chat/stream" and line["status"] == 200
    assert 500 <= line["duration_ms"] <= elapsed_ms + 50
    assert 100 <= line["ttft_ms"] < line["duration_ms"]
    assert (line["chunks"], line["chars"], line["tokens_out"], line["outcome"]) == (10, 30, 10, "complete")


def test_failures_before_the_first_delta_get_their_status_live(
    openai_server: LiveServer, upstream: FakeUpstream
) -> None:
    upstream.script = Script(status=429, headers={"retry-after": "4"})
    response = requests.post(f"{openai_server.url}/api/chat/stream", json=ASK, timeout=10)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "4"
    assert response.json() == {"error": "The model service is rate limiting requests; retry in 4 s."}
    line = openai_server.wait_for_access_line(response.headers["X-Request-ID"])
    assert (line["status"], line["outcome"], line["reason"]) == (429, "error", "upstream_rate_limited")


def test_a_failure_mid_stream_ends_the_body_in_band_live(
    openai_server: LiveServer, upstream: FakeUpstream
) -> None:
    upstream.script = Script(cut_after=2)
    response = requests.post(f"{openai_server.url}/api/chat/stream", json=ASK, timeout=10)
    assert response.status_code == 200
    assert response.text == "Hello,\n[error: The connection to the model broke.]"
    line = openai_server.wait_for_access_line(response.headers["X-Request-ID"])
    assert (line["outcome"], line["reason"]) == ("error", "upstream_broken")


def test_one_worker_serves_concurrent_demo_streams(demo_server: LiveServer) -> None:
    def one(index: int) -> tuple[int, str]:
        body = {"message": f"Tell me about topic number {index}"}
        response = requests.post(f"{demo_server.url}/api/chat/stream", json=body, timeout=30)
        return response.status_code, response.text

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(50)))
    assert results == [(200, compose(f"Tell me about topic number {index}")) for index in range(50)]
    assert len({text for _, text in results}) > 1


def test_many_concurrent_streams_arrive_whole(openai_server: LiveServer, upstream: FakeUpstream) -> None:
    # Many streams at once through one worker: every body must arrive whole, byte for byte.
    deltas = [f" w{i}" for i in range(10)]
    upstream.script = Script(deltas=deltas, delay=0.02)
    request = post("/api/chat/stream", ASK)
    results = asyncio.run(fetch_many(openai_server.port, request, 600))
    assert [r.error for r in results if r.error] == []
    assert all(r.status == 200 for r in results)
    assert sum(1 for r in results if r.body != "".join(deltas).encode()) == 0


def test_sse_events_arrive_as_the_model_speaks(openai_server: LiveServer, upstream: FakeUpstream) -> None:
    upstream.script = Script(deltas=[f"w{i} " for i in range(6)], delay=0.1)
    headers = {"Accept": "text/event-stream"}
    with requests.post(
        f"{openai_server.url}/api/chat/stream", json=ASK, headers=headers, stream=True, timeout=10
    ) as response:
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        arrivals = timed_chunks(response)
        request_id = response.headers["X-Request-ID"]
    events = [json.loads(chunk[6:]) for _, chunk in arrivals]
    assert events[0]["type"] == "metadata" and events[0]["request_id"] == response.headers["X-Request-ID"]
    assert [e["content"] for e in events[1:-1]] == [f"w{i} " for i in range(6)]
    assert events[-1] == {
        "type": "done",
        "usage": {"input_tokens": 9, "output_tokens": 6},
        "status": "complete",
    }
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals[1:-1])]
    assert all(gap > 0.05 for gap in gaps), gaps
    assert openai_server.wait_for_access_line(request_id)["framing"] == "sse"


def test_the_chat_command_streams_from_a_live_server(demo_server: LiveServer) -> None:
    chat = Path(sys.executable).parent / "chat"
    done = subprocess.run(
        [str(chat), "--url", demo_server.url, "Tell me a story about a robot"],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if k != "CHAT_API_KEY"},
    )
    expected = requests.post(f"{demo_server.url}/api/chat", json=ASK, timeout=10).json()["reply"]
    assert (done.returncode, done.stdout, done.stderr) == (0, expected + "\n", "")
    too_long = subprocess.run(
        [str(chat), "--url", demo_server.url, "--no-stream", "x" * 40000],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert too_long.returncode == 1
    assert too_long.stderr == "chat: 'message' is 40000 characters long; the limit is 32000.\n"
