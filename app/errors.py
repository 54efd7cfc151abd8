"""API errors: exceptions with a status and a sentence, turned into one JSON shape."""

from __future__ import annotations

import logging

from flask import Flask, Response, g, jsonify
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the client should see: an HTTP status and a sentence a person understands."""

    status = 400

    def __init__(
        self, message: str, status: int | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.headers = headers or {}


class UpstreamError(ApiError):
    """The model provider refused, rejected our key, broke, or sent something unreadable."""

    status = 502
    outcome = "upstream_error"

    def __init__(
        self, message: str, *, reason: str, status: int | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, status, headers)
        self.reason = reason


class ClientGone(ApiError):
    """The client closed its connection before the response started (while its body came in,
    or before the reply's first byte): logged as 499, like nginx does, and seen by no one."""

    status = 499

    def __init__(self, message: str = "The client closed the connection before the reply started.") -> None:
        super().__init__(message)


class UpstreamTimeout(UpstreamError):
    """The model provider went silent for longer than UPSTREAM_TIMEOUT_S."""

    status = 504


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """Build the one JSON error shape: ``{"error": "<sentence>"}``."""
    response = jsonify(error=message)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def register(app: Flask) -> None:
    """Send ApiError, HTTP errors and unexpected failures to clients as JSON."""

    @app.errorhandler(ApiError)
    def handle_api_error(error: ApiError) -> Response:
        return error_response(error.status, error.message, error.headers)

    @app.errorhandler(HTTPException)
    def handle_http_error(error: HTTPException) -> Response:
        headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
        status = error.code or 500
        return error_response(status, HTTP_SENTENCES.get(status, error.name + "."), headers)

    @app.errorhandler(SQLAlchemyError)
    def handle_database_error(error: SQLAlchemyError) -> Response:
        # An outage, not a bug: one line (its text never quotes the statement's values).
        log.error("the database failed: %s", type(error).__name__)
        g.error_reason = "database"
        sentence = "The database is unavailable or busy; retry shortly."
        return error_response(503, sentence, {"Retry-After": "1"})

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception) -> Response:
        # A bug: once, with its traceback, so an operator can act on it. Upstream errors never
        # get here (they are mapped at the llm boundary), so no provider text is in it.
        log.error("unhandled %s while serving the request", type(error).__name__, exc_info=error)
        g.error_reason = "internal"
        return error_response(500, "The server hit an unexpected error; it has been logged.")


HTTP_SENTENCES = {
    400: "The request could not be understood.",
    404: "There is nothing at this address.",
    405: "This address does not accept that method.",
    413: "The request body is larger than the 1 MiB limit.",
    415: "Send the body as JSON with Content-Type: application/json.",
    429: "Too many requests: slow down and retry after the time in Retry-After.",
}
