"""Prometheus series, right with several gunicorn workers; ``GET /metrics``.

Under gunicorn, gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at a fresh directory
before the workers start, so each worker writes its values there and any worker can
answer for all of them. The series are made once per process, on import, as
prometheus_client expects.
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, current_app
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from .errors import ApiError
from .guards import bearer_token

bp = Blueprint("metrics", __name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
STREAM_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

REQUESTS = Counter("chat_http_requests_total", "Requests answered, by route and status.", ["route", "status"])
DURATION = Histogram(
    "chat_http_request_duration_seconds", "Time until a request was over.", ["route"], buckets=LATENCY_BUCKETS
)
TTFT = Histogram(
    "chat_time_to_first_token_seconds", "Time from the request to the first delta.", buckets=LATENCY_BUCKETS
)
STREAM = Histogram(
    "chat_stream_duration_seconds", "Length of streamed replies.", ["framing"], buckets=STREAM_BUCKETS
)
TOKENS = Counter("chat_output_tokens_total", "Tokens the model reported writing.")
UPSTREAM_ERRORS = Counter("chat_upstream_errors_total", "Upstream failures, by kind.", ["reason"])
OUTCOMES = Counter("chat_replies_total", "Chat replies by outcome.", ["outcome"])
OPEN = Gauge("chat_streams_open", "Streams being sent now.", multiprocess_mode="livesum")
RUNNING = Gauge(
    "chat_replies_running",
    "Conversation replies being written now, read or not.",
    multiprocess_mode="livesum",
)


def observe(fields: dict[str, Any], route: str) -> None:
    """Count one finished request from its access-line fields."""
    seconds = fields["duration_ms"] / 1000.0
    REQUESTS.labels(route, str(fields["status"])).inc()
    DURATION.labels(route).observe(seconds)
    if "framing" in fields:  # a chat reply
        OUTCOMES.labels(fields["outcome"]).inc()
        if fields.get("ttft_ms") is not None:
            TTFT.observe(fields["ttft_ms"] / 1000.0)
        if fields["framing"] != "json" and fields["status"] == 200:
            STREAM.labels(fields["framing"]).observe(seconds)
        if fields.get("tokens_out"):
            TOKENS.inc(fields["tokens_out"])
    reason = fields.get("reason")
    if reason and reason.startswith("upstream_"):
        UPSTREAM_ERRORS.labels(reason).inc()


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text, summed over every worker when several run."""
    token = current_app.config["METRICS_TOKEN"]
    if token and not hmac.compare_digest(bearer_token(), token.encode()):
        raise ApiError("A valid metrics token is required.", 401, {"WWW-Authenticate": "Bearer"})
    if current_app.config["PROMETHEUS_MULTIPROC_DIR"]:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        data = generate_latest(registry)
    else:
        data = generate_latest()
    return Response(data, content_type=CONTENT_TYPE_LATEST)
