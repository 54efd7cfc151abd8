"""Logging set-up, request ids, and one access line per request, written when it is really over."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from typing import Any
from urllib.parse import quote

from flask import Flask, Response, g, request

from . import metrics

access_log = logging.getLogger("app.access")

REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")  # safe in a header, a log line and a page
PATH_SAFE = "/:@!$&'()*+,;=-._~"
QUIET_LOGGERS = ("httpx2", "httpcore", "openai", "alembic")  # per-request INFO lines of their own


class JsonFormatter(logging.Formatter):
    """One JSON object per line; an access line's fields become keys of their own."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)  # in the line: one line per record
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str, fmt: str) -> None:
    """Send the app's logs to stderr once, as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.set_name("app")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "app"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)


def init_app(app: Flask) -> None:
    """Time every request and log it once, at the response's close."""
    app.before_request(start_request)
    app.after_request(finish_request)


def start_request() -> None:
    """Start the clock and settle the request id."""
    g.started = time.perf_counter()
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex


def finish_request(response: Response) -> Response:
    """Add the request id and arrange the access line for when the body has been sent."""
    started = g.get("started", time.perf_counter())
    request_id = g.get("request_id") or uuid.uuid4().hex
    response.headers["X-Request-ID"] = request_id
    if g.get("server_timing"):
        total_ms = (time.perf_counter() - started) * 1000.0
        response.headers["Server-Timing"] = f"{g.server_timing}, total;dur={total_ms:.1f}"
    # Re-encoded, so a path cannot smuggle a line break or a space into the log.
    path = quote(request.path, safe=PATH_SAFE)
    fields: dict[str, Any] = {"method": request.method, "path": path, "status": response.status_code}
    relay = g.get("relay")
    reason = g.get("error_reason")
    route = request.url_rule.rule if request.url_rule else "unmatched"  # bounded, unlike the path
    streaming = relay is not None and relay.framing != "json" and response.status_code == 200
    if streaming:
        metrics.OPEN.inc()

    def log_access() -> None:
        fields["duration_ms"] = round((time.perf_counter() - started) * 1000.0, 1)
        if relay is not None:
            fields.update(
                ttft_ms=None if relay.ttft_ms is None else round(relay.ttft_ms, 1),
                chunks=relay.chunks,
                chars=relay.chars,
                tokens_out=relay.usage.output_tokens if relay.usage else None,
                outcome=relay.outcome,
            )
        else:
            status = fields["status"]
            fields["outcome"] = "disconnected" if status == 499 else "error" if status >= 400 else "complete"
        # A relay records its own failures, the internal ones too; the rest come from errors.py.
        why = relay.reason if relay is not None else reason
        if why:
            fields["reason"] = why
        fields["request_id"] = request_id
        if relay is not None:
            fields["framing"] = relay.framing  # text, sse or json: last, after the SPEC's keys
            fields["reasoning_chars"] = relay.reasoning_chars  # the model's reasoning, never in the answer
        access_log.info(access_text(fields), extra={"fields": fields})
        if streaming:
            metrics.OPEN.dec()
        metrics.observe(fields, route)

    response.call_on_close(log_access)
    return response


def access_text(fields: dict[str, Any]) -> str:
    """``POST /api/chat/stream 200 duration_ms=812.4 ... request_id=...``."""
    head = f"{fields['method']} {fields['path']} {fields['status']}"
    rest = " ".join(
        f"{key}={'-' if value is None else value}"
        for key, value in fields.items()
        if key not in ("method", "path", "status")
    )
    return f"{head} {rest}"
