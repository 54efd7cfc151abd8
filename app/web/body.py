"""Request bodies, read within a size limit and a deadline, whatever their framing."""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from typing import Any

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from ..errors import ApiError, ClientGone
from ..loop import Timer

log = logging.getLogger(__name__)

STEP = 64 * 1024  # bytes asked of the server per read


def read_body() -> bytes:
    """The request body: ``413`` past the size limit, ``408`` past ``REQUEST_BODY_TIMEOUT_S``,
    ``400`` for broken chunked framing, ``499`` when the client left half-way."""
    environ = request.environ
    limit = int(current_app.config["MAX_CONTENT_LENGTH"])
    length = request.content_length  # None for a chunked body
    client = environ.get("gunicorn.socket")
    if length is not None and length > limit:
        raise RequestEntityTooLarge()
    if length is None and not environ.get("wsgi.input_terminated"):
        return b""  # WSGI: no length and no end marker means no body
    want = limit + 1 if length is None else length  # one byte past the limit tells a chunked body
    timeout_s = float(current_app.config["REQUEST_BODY_TIMEOUT_S"])
    deadline = time.monotonic() + timeout_s
    watchdog = Watchdog(client, timeout_s)
    pieces: list[bytes] = []
    got = 0
    try:
        while got < want and time.monotonic() < deadline:
            piece = read_piece(environ["wsgi.input"], min(STEP, want - got))
            if not piece:
                break
            pieces.append(piece)
            got += len(piece)
    finally:
        watchdog.cancel()
    if got < want and (watchdog.fired or time.monotonic() >= deadline):
        raise ApiError(f"The request body did not arrive within {timeout_s:g} seconds.", 408)
    if got > limit:
        raise RequestEntityTooLarge()
    if length is not None and got < length:
        raise ClientGone("The client left before its request body arrived.")
    return b"".join(pieces)


def read_piece(stream: Any, size: int) -> bytes:
    """Up to ``size`` bytes of the body; b"" at its end or when the client left."""
    try:
        return bytes(stream.read(size))
    except OSError:
        return b""  # reset, or the connection ended inside a chunk: the client is gone
    except Exception as error:
        # The server's parser refused the chunked framing (a bad chunk size, a chunk without
        # its line end). Its exceptions are its own, so they are told apart from OSError only.
        log.debug("unreadable request body: %s", type(error).__name__)
        raise ApiError("The request body's chunked encoding is malformed.") from None


class Watchdog:
    """Stops reading the client at the deadline, even inside a read that is waiting for it."""

    def __init__(self, client: socket.socket | None, timeout_s: float) -> None:
        self.fired = False
        self._timer = None if client is None else Timer(timeout_s, self._fire, client)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _fire(self, client: socket.socket) -> None:
        self.fired = True
        # The waiting read returns at once; the server then closes the connection after the
        # 408, which still goes out.
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RD)
