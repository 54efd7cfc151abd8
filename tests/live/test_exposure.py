"""Exposed to the internet: what only the real server (gunicorn + gevent) shows."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ..support import SECRET_KEY, FakeUpstream, LiveServer, Script, wait_until

ASK = json.dumps({"message": "hi"}).encode()
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    server = LiveServer({"REQUEST_BODY_TIMEOUT_S": "2", "LOG_FORMAT": "json", "DEMO_DELAY_MS": "0"})
    yield server
    server.stop()


def head(path: str, body: bytes, extra: str = "", framing: str = "") -> bytes:
    framing = framing or f"Content-Length: {len(body)}\r\n"
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}{framing}\r\n".encode()
    )


def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` and read the answer until the server closes or a whole response is in."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while True:
            piece = sock.recv(65536)
            answer += piece
            top, _, rest = answer.partition(b"\r\n\r\n")
            length = [line for line in top.split(b"\r\n") if line.lower().startswith(b"content-length:")]
            if not piece or (length and len(rest) >= int(length[0].split(b":")[1])):
                return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def body_of(size: int) -> bytes:
    start = b'{"message": "hi", "pad": "'
    return start + b"a" * (size - len(start) - 2) + b'"}'


def chunked(data: bytes, size: int = 65536) -> bytes:
    pieces = (data[i : i + size] for i in range(0, len(data), size))
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def test_a_slow_body_gets_408_and_its_connection_closed(server: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=0.25) as sock:
        sock.sendall(head("/api/chat", b"x" * 100, "X-Request-ID: slow-body\r\n") + b"{")
        started, answer = time.monotonic(), b""
        while time.monotonic() - started < 8:
            try:
                if not answer:  # once the answer began, only read it: a write now can reset it
                    sock.sendall(b" ")  # one byte per read's timeout: each read is quick, the body is not
                piece = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if not piece:
                break
            answer += piece
    took = time.monotonic() - started
    assert status_of(answer) == 408, answer
    assert b"did not arrive within 2 seconds" in answer
    assert 1.8 < took < 4.0
    assert server.wait_for_access_line("slow-body")["status"] == 408


def test_a_large_body_arriving_steadily_is_not_penalised(server: LiveServer) -> None:
    body = body_of(MIB)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10.0) as sock:
        sock.sendall(head("/api/chat", body))
        for start in range(0, len(body), 64 * 1024):  # 16 pieces over 1.2 s, well within 2 s
            sock.sendall(body[start : start + 64 * 1024])
            time.sleep(0.075)
        assert status_of(sock.recv(4096)) == 200


def test_a_client_that_leaves_mid_body_is_logged_499(server: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head("/api/chat", b"x" * 100, "X-Request-ID: left-mid-body\r\n") + b'{"mess')
        time.sleep(0.2)
    line = server.wait_for_access_line("left-mid-body")
    assert (line["status"], line["outcome"]) == (499, "disconnected")


@pytest.mark.parametrize(
    ("what", "data"), [("bad chunk size", b"zz\r\n{}\r\n0\r\n\r\n"), ("no chunk end", b"2\r\n{}XX0\r\n\r\n")]
)
def test_malformed_chunking_is_400_with_a_sentence_and_no_error_line(
    server: LiveServer, what: str, data: bytes
) -> None:
    extra = f"X-Request-ID: bad-chunks-{len(data)}\r\n"
    answer = exchange(server.port, head("/api/chat", b"", extra, "Transfer-Encoding: chunked\r\n") + data)
    assert status_of(answer) == 400, what
    assert b"chunked encoding is malformed" in answer
    server.wait_for_access_line(f"bad-chunks-{len(data)}")
    assert '"level": "ERROR"' not in server.log_text()


@pytest.mark.parametrize("size", [MIB, MIB + 1])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_one_mebibyte_is_accepted_and_one_byte_more_is_413(
    server: LiveServer, size: int, framing: str
) -> None:
    body = body_of(size)
    if framing == "length":
        answer = exchange(server.port, head("/api/chat", body) + body)
    else:
        answer = exchange(
            server.port, head("/api/chat", b"", "", "Transfer-Encoding: chunked\r\n") + chunked(body)
        )
    assert status_of(answer) == (200 if size == MIB else 413)


@pytest.mark.parametrize(
    ("method", "path", "accept"),
    [
        ("GET", "/", "text/html"),
        ("GET", "/healthz", "*/*"),
        ("POST", "/api/chat", "*/*"),
        ("POST", "/api/chat/stream", "*/*"),
        ("POST", "/api/chat/stream", "text/event-stream"),
        ("GET", "/nowhere", "*/*"),
    ],
)
def test_security_headers_on_pages_api_streams_and_errors(
    server: LiveServer, method: str, path: str, accept: str
) -> None:
    response = requests.request(
        method, server.url + path, json={"message": "hi"}, headers={"Accept": accept}, timeout=10
    )
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_no_redirect_from_the_host_header_and_only_plain_request_ids(server: LiveServer) -> None:
    answer = exchange(server.port, head("/api//chat", ASK).replace(b"Host: x", b"Host: evil.example") + ASK)
    assert status_of(answer) == 404 and b"evil.example" not in answer
    forged = exchange(server.port, head("/api/chat", ASK, "X-Request-ID: <script>x</script>\r\n") + ASK)
    assert b"<script>" not in forged
    kept = exchange(server.port, head("/api/chat", ASK, "X-Request-ID: abc.DEF_1-2\r\n") + ASK)
    assert b"X-Request-ID: abc.DEF_1-2\r\n" in kept


def test_thirty_early_closes_print_no_traceback(server: LiveServer) -> None:
    request = head("/api/chat/stream", ASK, "Connection: close\r\n") + ASK

    def streams_logged() -> int:
        return server.log_text().count('"path": "/api/chat/stream"')

    before = streams_logged()
    clients = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(30)]
    for client in clients:
        client.sendall(request)
    for client in clients:
        client.close()
    assert wait_until(lambda: streams_logged() == before + 30)  # each one over, and logged once
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
    assert "Traceback" not in server.log_text()


@pytest.mark.parametrize("accept", ["text/plain", "text/event-stream"])
def test_a_connection_kept_alive_after_a_stream_serves_its_next_request(
    server: LiveServer, accept: str
) -> None:
    # The finished reply's watcher must hand the socket back, not read the next request itself.
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    for _ in range(60):
        connection.request(
            "POST",
            "/api/chat/stream",
            body=ASK,
            headers={"Content-Type": "application/json", "Accept": accept},
        )
        answer = connection.getresponse()
        assert answer.status == 200 and answer.read()
        connection.request("GET", "/healthz")
        answer = connection.getresponse()
        assert (answer.status, json.loads(answer.read())["status"]) == (200, "ok")
    connection.close()
    assert "Traceback" not in server.log_text()
    assert "Error handling request" not in server.log_text()


def test_forwarded_garbage_does_not_dodge_the_rate_limit() -> None:
    server = LiveServer({"TRUSTED_PROXIES": "1", "RATE_LIMIT": "2/minute"})
    try:
        statuses = [
            status_of(
                exchange(server.port, head("/api/chat", ASK, f"X-Forwarded-For: garbage-{n}\r\n") + ASK)
            )
            for n in range(3)
        ]
        assert statuses == [200, 200, 429]
    finally:
        server.stop()


def test_guessing_keys_is_throttled_and_a_valid_key_still_served() -> None:
    server = LiveServer({"API_KEYS": "valid-key-1", "AUTH_FAILURE_LIMIT": "5/minute"})
    try:
        guesses = [
            exchange(server.port, head("/api/chat", ASK, f"Authorization: Bearer guess-{n}\r\n") + ASK)
            for n in range(7)
        ]
        assert [status_of(answer) for answer in guesses] == [401] * 5 + [429] * 2
        assert b"Retry-After: " in guesses[-1]
        valid = exchange(server.port, head("/api/chat", ASK, "Authorization: Bearer valid-key-1\r\n") + ASK)
        assert status_of(valid) == 200
    finally:
        server.stop()


def test_a_cors_pattern_stops_start_up_with_a_sentence() -> None:
    with pytest.raises(
        RuntimeError, match=r"CORS_ORIGINS takes exact origins .* 'https://\*.example.com' is not one"
    ):
        LiveServer({"CORS_ORIGINS": "https://*.example.com"})


def test_the_stream_cap_is_reached_and_released() -> None:
    server = LiveServer({"MAX_STREAMS_PER_CLIENT": "2", "DEMO_DELAY_MS": "200"})
    try:
        held = [
            requests.post(f"{server.url}/api/chat/stream", json={"message": "hi"}, stream=True, timeout=10)
            for _ in range(2)
        ]
        assert [response.status_code for response in held] == [200, 200]
        for route in ("/api/chat/stream", "/api/chat"):
            refused = requests.post(server.url + route, json={"message": "hi"}, timeout=10)
            assert refused.status_code == 429
            assert "Too many replies in flight" in refused.json()["error"]
        held[0].close()  # the client leaves: the watcher ends the reply and its slot is free
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            again = requests.post(
                f"{server.url}/api/chat/stream", json={"message": "hi"}, stream=True, timeout=10
            )
            again.close()
            if again.status_code == 200:
                break
            time.sleep(0.2)
        assert again.status_code == 200
        held[1].close()
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("path", "accept"),
    [
        ("/api/chat/stream", "text/plain"),
        ("/api/chat/stream", "text/event-stream"),
        ("/api/chat", "application/json"),
    ],
)
def test_a_client_that_never_reads_is_dropped_like_one_that_left(
    upstream_server: FakeUpstream, path: str, accept: str
) -> None:
    deltas = ["x" * 2000] * (outgrowing_buffers(streamed=path.endswith("stream")) // 2000)
    upstream_server.reset(Script(deltas=deltas))
    server = LiveServer(
        {
            "OPENAI_API_KEY": SECRET_KEY,
            "OPENAI_BASE_URL": upstream_server.base_url,
            "CLIENT_WRITE_TIMEOUT_S": "2",
            "LOG_FORMAT": "json",
        }
    )
    try:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, never read
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(head(path, ASK, f"Accept: {accept}\r\nX-Request-ID: stalled\r\n") + ASK)
            line = server.wait_for_access_line("stalled", timeout=8)
            assert (line["outcome"], line.get("reason")) == ("disconnected", "client_stalled")
            assert upstream_server.wait_until(lambda: upstream_server.open_streams() == 0, timeout=1.0)
            stream = upstream_server.streams[0]
            assert stream.closed_at is not None and stream.closed_at - stream.opened_at < 6
            if path.endswith("stream"):
                assert stream.ended_by == "client" and stream.deltas_sent < len(deltas)
        # Dropped as a departed client is: nothing for the operator to act on.
        assert "Traceback" not in server.log_text() and "[ERROR]" not in server.log_text()
    finally:
        server.stop()


def outgrowing_buffers(streamed: bool) -> int:
    """Twice what the kernel can hold of a reply whose client never reads, however far it tunes its
    buffers (to ``tcp_rmem``'s and ``tcp_wmem``'s maxima). A stream can sit in three: the model's
    send buffer, the service's receive buffer from it and its send buffer to the client; less, and
    the model finishes into them before the drop. A JSON reply is written only once the model has
    finished, so only the service's send buffer holds it."""
    receive, send = (
        int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2]) for name in ("tcp_rmem", "tcp_wmem")
    )
    return 2 * (receive + 2 * send if streamed else send)


def test_sigterm_closes_an_idle_connection_and_stops_at_once() -> None:
    server = LiveServer({"GRACEFUL_TIMEOUT_S": "30"})
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b"}\n"):  # the whole JSON body: served, and kept alive
            answer += idle.recv(65536)
        assert b" 200 " in answer
        started = time.monotonic()
        os.killpg(server.process.pid, signal.SIGTERM)
        assert idle.recv(1) == b""  # closed by the server, not left to the keep-alive timeout
        server.process.wait(timeout=10)
        assert time.monotonic() - started < 3.0
    finally:
        idle.close()
        server.stop()


def test_sigterm_still_lets_a_reply_in_flight_finish() -> None:
    server = LiveServer({"DEMO_DELAY_MS": "100", "GRACEFUL_TIMEOUT_S": "30"})
    try:
        with requests.post(
            f"{server.url}/api/chat/stream", json={"message": "hi"}, stream=True, timeout=10
        ) as reply:
            chunks = reply.iter_content(chunk_size=None)
            first = next(chunks)
            os.killpg(server.process.pid, signal.SIGTERM)
            rest = b"".join(chunks)
        assert first and rest and not rest.endswith(b"]")  # the whole reply, no error line
        server.process.wait(timeout=10)
    finally:
        server.stop()
