"""Start the service exactly as the Procfile does (gunicorn + gevent) on a free loopback port."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from prometheus_client.mmap_dict import MmapedDict

from app.settings import DEFAULTS

from .wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
# The upstream key every test app and server is given: a sentinel the log and response tests look for.
SECRET_KEY = "upstream-SENTINEL-key-0123456789abcdef"


def procfile_command() -> str:
    """The Procfile's ``web:`` command, as a Procfile host would run it."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return line.split(":", 1)[1].strip()
    raise RuntimeError("Procfile has no web: line")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """One gunicorn master with its workers; its log goes to a file the tests can read."""

    def __init__(
        self,
        settings: dict[str, str],
        cpus: set[int] | None = None,
        config: Path | None = None,
        app: str | None = None,
    ) -> None:
        """``config``: a gunicorn config file in place of the service's own (which it should load);
        ``app``: a WSGI app in place of the service (as gunicorn names one, for the benchmark)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Settings come only from the test (never from the developer's shell); .env fills the rest.
        env = {k: v for k, v in os.environ.items() if k not in DEFAULTS}
        self.folder = tempfile.TemporaryDirectory(prefix="live-server-")
        database = f"sqlite:///{self.folder.name}/chat.db"  # never the checkout's instance/ folder
        env.update({"PORT": str(self.port), "WEB_CONCURRENCY": "1", "DATABASE_URL": database, **settings})
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        self.log = tempfile.NamedTemporaryFile(prefix="live-server-", suffix=".log", delete=False)  # noqa: SIM115
        command = procfile_command()
        if config is not None:
            command = command.replace("--config gunicorn.conf.py", f"--config {config}")
        if app is not None:
            if not command.endswith(" wsgi:app"):
                raise RuntimeError("the Procfile's web: command does not end with the app (wsgi:app)")
            command = command.removesuffix("wsgi:app") + shlex.quote(app)
        self.process = subprocess.Popen(
            ["sh", "-c", f"exec {command}"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()  # the error carries the log; nothing is left open
            raise

    def _wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited at start-up:\n{self.log_text()}")
            try:
                return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
            except requests.RequestException:  # not listening yet, or a worker still booting
                return False

        if not wait_until(ready, timeout, interval=0.1):
            raise RuntimeError(f"the server did not answer within {timeout} s:\n{self.log_text()}")

    def worker_pid(self) -> int:
        """The pid of the (first) gunicorn worker."""
        return self.worker_pids()[0]

    def worker_pids(self) -> list[int]:
        with open(f"/proc/{self.process.pid}/task/{self.process.pid}/children") as children:
            return [int(pid) for pid in children.read().split()]

    def chat_requests_per_worker(self) -> dict[str, float]:
        """How many chat requests each worker answered, read from its own metrics file."""
        counts = {}
        for path in Path(tempfile.gettempdir(), f"chat-metrics-{self.process.pid}").glob("counter_*.db"):
            counts[path.stem.split("_")[1]] = sum(
                value
                for key, value, *_ in MmapedDict.read_all_values_from_file(str(path))
                if json.loads(key)[1] == "chat_http_requests_total"
                and json.loads(key)[2]["route"] in ("/api/chat", "/api/chat/stream")
            )
        return counts

    def log_text(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def access_lines(self, request_id: str) -> list[dict[str, Any]]:
        """The JSON access lines written for one request id."""
        found = []
        for line in self.log_text().splitlines():
            if line.startswith("{") and f'"request_id": "{request_id}"' in line:
                found.append(json.loads(line))
        return found

    def wait_for_access_line(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The first access line for ``request_id``, once it is written."""
        lines = wait_until(lambda: self.access_lines(request_id), timeout)
        if not lines:
            raise AssertionError(f"no access line for {request_id}:\n{self.log_text()[-3000:]}")
        return lines[0]

    def settled_access_lines(self, request_id: str) -> list[dict[str, Any]]:
        """The access lines for ``request_id`` once a later request's own line is in the log: one
        worker serves both, so a line it still owed the first would be there by then."""
        marker = f"after-{time.monotonic_ns()}"
        requests.get(f"{self.url}/healthz", headers={"X-Request-ID": marker}, timeout=5)
        self.wait_for_access_line(marker)
        return self.access_lines(request_id)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)
        self.folder.cleanup()
