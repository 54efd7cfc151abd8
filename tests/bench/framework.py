"""The floor's relay behind the service's server and framework, with nothing of the service.

What gunicorn alone (``bare``, a plain WSGI callable) and gunicorn with Flask (``flask_app``,
one route) add to a stream's first byte and CPU, beside the floor and the service in the same
run. Both are served by the Procfile's gunicorn command with the service's ``gunicorn.conf.py``
(``scenarios.Framework``), and relay as the floor does: the first delta is read before the
response starts, then one body chunk per delta. The upstream and its API come from
FLOOR_UPSTREAM and FLOOR_API.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask, Response, request

from .floor import Floor

floor = Floor(os.environ["FLOOR_UPSTREAM"], os.environ["FLOOR_API"])


def relay(message: str) -> Iterator[bytes]:
    """The reply to ``message`` as body chunks, its first delta already read."""
    upstream, deltas = floor.open(message)
    first = next(deltas, "")

    def chunks() -> Iterator[bytes]:
        yield first.encode()
        for text in deltas:
            yield text.encode()
        floor.idle.append(upstream)

    return chunks()


def bare(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
    """gunicorn alone: the stream route, and a health check to be started against."""
    if environ["PATH_INFO"] == "/healthz":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return iter([b"ok"])
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = relay(json.loads(environ["wsgi.input"].read(length))["message"])
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return body


flask_app = Flask(__name__)


@flask_app.post("/api/chat/stream")
def stream() -> Response:
    return Response(relay(request.get_json()["message"]), mimetype="text/plain")


@flask_app.get("/healthz")
def healthz() -> str:
    return "ok"
