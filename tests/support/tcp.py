"""A TCP server on loopback for tests that play a peer by hand (a server that drops connections, a
proxy): each connection is served in a thread of its own until the server is closed."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable


class Listener:
    """Accepts on a free loopback port and hands each connection to ``serve`` in a thread."""

    def __init__(self, serve: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.serve = serve
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.connections += 1
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def close(self) -> None:
        self.sock.close()
