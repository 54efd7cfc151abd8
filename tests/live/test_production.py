"""Several workers and a shutdown, as an operator runs the service."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from ..support import LiveServer, wait_until

ASK = {"message": "Tell me a story about a robot"}


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus text (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{name}{{{re.escape(wanted)}}} (\S+)$" if labels else rf"^{name} (\S+)$"
    found = re.findall(pattern, metrics, flags=re.M)
    return float(found[0]) if found else 0.0


@pytest.fixture(scope="module")
def two_workers() -> Iterator[LiveServer]:
    server = LiveServer({"WEB_CONCURRENCY": "2", "DEMO_DELAY_MS": "30"})
    yield server
    server.stop()


def test_metrics_add_up_across_two_workers(two_workers: LiveServer) -> None:
    url = two_workers.url

    def ask(_: int) -> bool:
        return requests.post(f"{url}/api/chat", json={"message": "hi", "max_tokens": 20}, timeout=10).ok

    with ThreadPoolExecutor(max_workers=10) as pool:
        assert all(pool.map(ask, range(20)))
    metrics = requests.get(f"{url}/metrics", timeout=5).text
    assert sample(metrics, "chat_http_requests_total", route="/api/chat", status="200") == 20
    assert sample(metrics, "chat_http_request_duration_seconds_count", route="/api/chat") == 20
    # Both workers counted requests: the 20 above were summed over their files.
    per_worker = two_workers.chat_requests_per_worker()
    assert sorted(per_worker) == sorted(str(pid) for pid in two_workers.worker_pids())
    assert sum(per_worker.values()) == 20 and all(per_worker.values()), per_worker


def test_the_open_streams_gauge_is_a_live_sum(two_workers: LiveServer) -> None:
    url = two_workers.url
    with requests.post(f"{url}/api/chat/stream", json=ASK, stream=True, timeout=10) as response:
        next(response.iter_content(chunk_size=None))
        during = sample(requests.get(f"{url}/metrics", timeout=5).text, "chat_streams_open")
        for _ in response.iter_content(chunk_size=None):
            pass
    assert during == 1
    # The gauge drops when the server closes the response, just after the client has it all.
    assert wait_until(
        lambda: sample(requests.get(f"{url}/metrics", timeout=5).text, "chat_streams_open") == 0
    )


def test_sigterm_lets_open_streams_finish_and_refuses_new_connections() -> None:
    server = LiveServer({"DEMO_DELAY_MS": "40", "GRACEFUL_TIMEOUT_S": "20", "LOG_FORMAT": "json"})
    try:
        expected = requests.post(f"{server.url}/api/chat", json=ASK, timeout=10).json()["reply"]
        received: list[bytes] = []
        with requests.post(f"{server.url}/api/chat/stream", json=ASK, stream=True, timeout=10) as response:
            chunks = response.iter_content(chunk_size=None)
            received.append(next(chunks))
            os.kill(server.process.pid, signal.SIGTERM)  # to the gunicorn master, as a host does
            refused = threading.Event()

            def try_to_connect() -> None:
                deadline = time.monotonic() + 2
                while time.monotonic() < deadline:
                    try:
                        socket.create_connection(("127.0.0.1", server.port), timeout=0.5).close()
                    except ConnectionRefusedError:
                        refused.set()
                        return
                    time.sleep(0.05)

            prober = threading.Thread(target=try_to_connect)
            prober.start()
            received.extend(chunks)
            prober.join()
        assert b"".join(received).decode() == expected  # the open stream ran to its end
        assert refused.is_set()  # while new connections were turned away
        assert server.process.wait(timeout=20) == 0
    finally:
        server.stop()
