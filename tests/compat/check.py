"""The service (gunicorn + gevent, as the Procfile runs it) against a real OpenAI-compatible gateway.

``make compat`` runs it against the LiteLLM proxy with mock and paced models
(``tests/compat/litellm.yaml``); ``python -m tests.compat.check --upstream fake`` runs the same
checks against the fake upstream. Both APIs, the three framings, clients leaving during a 20 s
silent start, pings while a model thinks, in-stream errors. Prints each check and the figures;
exits 1 if a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from ..support import FakeUpstream, LiveServer, Script, free_port, sse

HERE = Path(__file__).resolve().parent
WORDS = ["Hello", " from", " a", " paced", " model", "."]
ANSWER = "".join(WORDS)
MODELS = ("paced", "think-3", "think-20", "open-then-think-20", "rate-limited", "too-long")
WAIT_S = 1.0  # FIRST_DELTA_WAIT_S
PING_S = 1.0  # SSE_PING_S
ACCEPT = {"text": "text/plain", "sse": "text/event-stream", "json": "application/json"}
RATE_WAIT = "Rate limit reached for requests. Please try again in 7s."


class Upstream:
    """A running upstream: its base URL, key and port; stop() ends it."""

    def __init__(self, url: str, key: str, port: int, stop: Callable[[], None]) -> None:
        self.url, self.key, self.port, self.stop = url, key, port, stop


def fake_upstream() -> Upstream:
    """The fake, with the LiteLLM models' behaviours under the same names."""
    fake = FakeUpstream().start()
    fake.per_model = {
        "paced": Script(deltas=WORDS, delay=0.05),
        "think-3": Script(deltas=WORDS, first_delay=3),
        "think-20": Script(deltas=WORDS, headers_delay=20),  # headers held, as LiteLLM does
        "open-then-think-20": Script(deltas=WORDS, first_delay=20),  # headers, then silence
        "rate-limited": Script(
            error_after=0, error_code="rate_limit_exceeded", error_message=RATE_WAIT, error_event="failed"
        ),
        "too-long": Script(error_after=0, error_code="context_length_exceeded", error_event="failed"),
    }
    return Upstream(fake.base_url, "not-needed", fake.port, fake.stop)


def litellm_upstream(command: str) -> Upstream:
    """The LiteLLM proxy on loopback, its master key made up for this run."""
    port = free_port()
    key = f"sk-{secrets.token_hex(16)}"
    # LiteLLM loads a .env found from its own install folder upwards (.venv-compat sits in the
    # checkout) and reads settings from its environment: the project's DATABASE_URL=sqlite:///...,
    # which it refuses, must reach it by neither door. So it runs in a folder of its own with only
    # what it needs, and python-dotenv told not to load any file.
    folder = tempfile.TemporaryDirectory(prefix="compat-litellm-")
    for name in ("litellm.yaml", "handlers.py"):  # the config names its handler module beside it
        shutil.copy(HERE / name, folder.name)
    env = {name: os.environ[name] for name in ("PATH", "HOME", "TMPDIR", "LANG") if name in os.environ}
    env |= {"LITELLM_MASTER_KEY": key, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHON_DOTENV_DISABLED": "1"}
    log = open(Path(folder.name) / "litellm.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [command, "--config", "litellm.yaml", "--host", "127.0.0.1", "--port", str(port)],
        cwd=folder.name,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def stop() -> None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        folder.cleanup()

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = Path(log.name).read_text(errors="replace")[-3000:]
            stop()
            raise RuntimeError(f"LiteLLM exited at start-up:\n{text}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=2).ok:
                return Upstream(f"http://127.0.0.1:{port}/v1", key, port, stop)
        except requests.RequestException:
            time.sleep(0.3)
    text = Path(log.name).read_text(errors="replace")[-3000:]
    stop()
    raise RuntimeError(f"LiteLLM did not start within 90 s:\n{text}")


def connections_to(port: int) -> set[str]:
    """The local ends of the established loopback TCP connections to ``port``."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, state = line.split()[1:4]
        if state == "01" and int(remote.split(":")[1], 16) == port:
            found.add(local)
    return found


def send(server: LiveServer, framing: str, model: str, request_id: str) -> socket.socket:
    """A chat request on a raw socket, so the check decides exactly when to hang up."""
    path = "/api/chat" if framing == "json" else "/api/chat/stream"
    body = json.dumps({"message": "Hello?", "model": model}).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: {ACCEPT[framing]}\r\n"
        f"X-Request-ID: {request_id}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


class Check:
    """Runs the checks against one service, records what failed and the figures."""

    def __init__(self, server: LiveServer, upstream: Upstream, api: str) -> None:
        self.server, self.upstream, self.api = server, upstream, api
        self.failures: list[str] = []
        self.figures: dict[str, Any] = {}

    def expect(self, what: str, ok: bool, seen: Any) -> None:
        print(f"  {'ok  ' if ok else 'FAIL'} {self.api:9} {what}: {seen}", flush=True)
        if not ok:
            self.failures.append(f"{self.api} {what}: {seen}")

    def post(self, framing: str, model: str) -> requests.Response:
        path = "/api/chat" if framing == "json" else "/api/chat/stream"
        headers = {"Accept": ACCEPT[framing]}
        return requests.post(
            f"{self.server.url}{path}",
            json={"message": "Hello?", "model": model},
            headers=headers,
            timeout=30,
        )

    def framings(self) -> None:
        for framing in ACCEPT:
            response = self.post(framing, "paced")
            if framing == "json":
                text = response.json().get("reply")
            elif framing == "sse":
                events = sse.events(response.text)
                kinds = [e["type"] for e in events]
                text = "".join(e.get("content", "") for e in events if e["type"] == "token")
                self.expect(
                    "sse events", kinds[0] == "metadata" and kinds[-1] == "done", kinds[:2] + kinds[-1:]
                )
            else:
                text = response.text
            self.expect(
                f"{framing} reply",
                (response.status_code, text) == (200, ANSWER),
                (response.status_code, text),
            )

    def leave_during_a_silent_start(self, model: str, label: str) -> None:
        request_id = f"compat-leave-{model}-{time.monotonic_ns()}"
        before = connections_to(self.upstream.port)
        sock = send(self.server, "sse", model, request_id)
        time.sleep(0.5)  # the model is silent
        during = connections_to(self.upstream.port)
        in_use = during - before or during
        sock.close()
        left = time.monotonic()
        while in_use <= connections_to(self.upstream.port) and time.monotonic() - left < 25:
            time.sleep(0.002)
        closed_ms = (time.monotonic() - left) * 1000
        self.figures[f"upstream closed after the client left ({label}), ms"] = round(closed_ms)
        self.expect(f"upstream closed after leaving ({label})", closed_ms < 1000, f"{closed_ms:.0f} ms")
        line = self.server.wait_for_access_line(request_id, timeout=3)
        seen = (line["status"], line["outcome"])
        self.figures[f"access line after the client left ({label})"] = seen
        self.expect(f"access line after leaving ({label})", seen[1] == "disconnected", seen)

    def pings_while_thinking(self) -> None:
        sock = send(self.server, "sse", "think-3", f"compat-ping-{time.monotonic_ns()}")
        started = time.monotonic()
        received = b""
        first_ping = metadata = None
        while b'"type":"done"' not in received and time.monotonic() - started < 10:
            data = sock.recv(65536)
            if not data:
                break
            received += data
            now = round(time.monotonic() - started, 2)
            if metadata is None and b'"type":"metadata"' in data:
                metadata = now
            if first_ping is None and b": ping" in data:
                first_ping = now
        sock.close()
        self.figures["metadata event during a 3 s think, s"] = metadata
        self.figures["first ping during a 3 s think, s"] = first_ping
        ok = metadata is not None and first_ping is not None and first_ping < 3
        self.expect("metadata, then a ping while the model thinks 3 s", ok, (metadata, first_ping))

    def errors(self) -> None:
        for model, status in (("rate-limited", 429), ("too-long", 400)):
            seen = []
            for framing in ACCEPT:
                response = self.post(framing, model)
                seen.append((framing, response.status_code, response.headers.get("Retry-After")))
            self.figures[f"{model} statuses (framing, status, Retry-After)"] = seen
            self.expect(f"{model} before any text", all(s == status for _, s, _ in seen), seen)


def run(upstream: Upstream) -> int:
    failures: list[str] = []
    for api in ("chat", "responses"):
        settings = {
            "OPENAI_API_KEY": upstream.key,
            "OPENAI_BASE_URL": upstream.url,
            "OPENAI_API": api,
            "OPENAI_MODEL": "paced",
            "ALLOWED_MODELS": ",".join(MODELS),
            "FIRST_DELTA_WAIT_S": str(WAIT_S),
            "SSE_PING_S": str(PING_S),
            "UPSTREAM_TIMEOUT_S": "30",
            "LOG_FORMAT": "json",
        }
        server = LiveServer(settings)
        try:
            check = Check(server, upstream, api)
            check.leave_during_a_silent_start("think-20", "20 s silent start, before headers")
            check.leave_during_a_silent_start("open-then-think-20", "20 s silent start, after headers")
            check.framings()
            check.pings_while_thinking()
            check.errors()
        finally:
            server.stop()
        failures += check.failures
        print(f"figures ({api}, FIRST_DELTA_WAIT_S={WAIT_S:g}, SSE_PING_S={PING_S:g}):")
        for name, value in check.figures.items():
            print(f"  {name}: {value}")
    print("compat: all checks passed" if not failures else f"compat: {len(failures)} checks failed")
    return 1 if failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", choices=("litellm", "fake"), default="litellm")
    parser.add_argument("--litellm", default="litellm", help="the LiteLLM proxy command (its own virtualenv)")
    args = parser.parse_args()
    upstream = litellm_upstream(args.litellm) if args.upstream == "litellm" else fake_upstream()
    print(f"upstream: {args.upstream} at {upstream.url}", flush=True)
    try:
        code = run(upstream)
    finally:
        upstream.stop()
    sys.exit(code)


if __name__ == "__main__":
    main()
