"""A throw-away Redis for the tests: Debian's redis-server on a free loopback port, nothing on disk."""

from __future__ import annotations

import shutil
import socket
import subprocess

from .server import free_port
from .wait import wait_until


class RedisUnavailable(RuntimeError):
    """No server could be started; the message says why, for a test to skip with."""


class RedisServer:
    """One redis-server process; ``kill`` ends it at once (as a crash would), ``start`` brings it back
    on the same port, empty."""

    def __init__(self) -> None:
        self.program = shutil.which("redis-server")
        if self.program is None:
            raise RedisUnavailable(
                "redis-server is not installed (make test installs Debian's redis-server as root)"
            )
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        assert self.program is not None
        self.process = subprocess.Popen(
            [
                self.program,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        if wait_until(self._listening, 10, interval=0.05):
            return
        self.stop()
        raise RedisUnavailable("redis-server did not start listening within 10 s")

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
        except OSError:
            return False
        return True

    def kill(self) -> None:
        """End the server at once, as a crash or a lost host would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
