"""The service's own pages: ``GET /`` and ``GET /healthz``."""

from __future__ import annotations

import secrets

from flask import Blueprint, current_app, render_template, request

bp = Blueprint("pages", __name__)

RUNNING = "AI Chat API is running"


def page_policy(nonce: str) -> str:
    """The page's Content-Security-Policy: its own script and style, requests to this host only."""
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src 'nonce-{nonce}'",
            f"style-src 'nonce-{nonce}'",
            "connect-src 'self'",
            "img-src data:",  # the empty favicon, so the browser asks for no other
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


@bp.get("/")
def index() -> tuple[str, int, dict[str, str]]:
    """The chat page for a browser; a line saying the service is up for anything else."""
    if request.accept_mimetypes.best_match(["text/plain", "text/html"]) == "text/html":
        # A fresh nonce per response: only the script and style this response carries may run.
        nonce = secrets.token_urlsafe(18)
        headers = {"Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": page_policy(nonce)}
        return render_template("chat.html", nonce=nonce), 200, headers
    return RUNNING, 200, {"Content-Type": "text/plain; charset=utf-8"}


@bp.get("/healthz")
def healthz() -> dict[str, str]:
    """Which provider, default model and API this worker uses."""
    config = current_app.config
    return {
        "status": "ok",
        "provider": config["PROVIDER"],
        "model": config["OPENAI_MODEL"],
        "api": config["OPENAI_API"],
    }
