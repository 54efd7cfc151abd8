"""The floor's relay behind the service's server and framework, with nothing of the service.

What gunicorn alone (``create("bare")``, a plain WSGI callable) and gunicorn with Flask
(``create("flask")``, one route) add to a stream's first byte and CPU, read beside the floor.
Both are served by the Procfile's gunicorn command with the service's ``gunicorn.conf.py``
(``scenarios.Framework``), and relay as the floor does: the first delta is read before the
response starts, then one body chunk per delta. The upstream and its API come from
FLOOR_UPSTREAM and FLOOR_API.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Flask, Response, request

from .floor import Floor

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def create(app: str) -> WSGIApp:
    """The floor's relay as ``app``: "bare" (gunicorn alone) or "flask" (gunicorn + Flask)."""
    floor = Floor(os.environ["FLOOR_UPSTREAM"], os.environ["FLOOR_API"])
    if app == "bare":
        return bare(floor)
    if app == "flask":
        return with_flask(floor)
    raise ValueError(f"no such app: {app!r}")


def relay(floor: Floor, message: str) -> Iterator[bytes]:
    """The reply to ``message`` as body chunks, its first delta already read."""
    upstream, deltas = floor.open(message)
    first = next(deltas, "")

    def chunks() -> Iterator[bytes]:
        yield first.encode()
        for text in deltas:
            yield text.encode()
        floor.idle.append(upstream)

    return chunks()


def bare(floor: Floor) -> WSGIApp:
    """A plain WSGI callable: the stream route, and a health check to be started against."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        if environ["PATH_INFO"] == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
            return iter([b"ok"])
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = relay(floor, json.loads(environ["wsgi.input"].read(length))["message"])
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
        return body

    return app


def with_flask(floor: Floor) -> WSGIApp:
    """A one-route Flask app, with Flask's own health check answer."""
    app = Flask(__name__)

    @app.post("/api/chat/stream")
    def stream() -> Response:
        """The reply's text, a chunk per delta."""
        return Response(relay(floor, request.get_json()["message"]), mimetype="text/plain")

    @app.get("/healthz")
    def healthz() -> str:
        """For the server to be started against (HTML by Flask's default: told apart from bare's)."""
        return "ok"

    return app
