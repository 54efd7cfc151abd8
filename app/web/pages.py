"""The service's own pages: ``GET /`` and ``GET /healthz``; the page's files come from ``/static/``."""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
from pathlib import Path

from flask import Blueprint, current_app, render_template, request, url_for

bp = Blueprint("pages", __name__)

RUNNING = "AI Chat API is running"
STATIC = Path(__file__).parents[1] / "static"  # the app's, which Flask serves at /static/
VENDOR = STATIC / "vendor" / "vendor.json"  # the pinned third-party files (make vendor)


@functools.cache
def fingerprint(name: str) -> str:
    """A static file's content hash: in its address, so it can be cached for a year and a new
    version of the file is a new address."""
    return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:16]


@bp.app_context_processor
def assets() -> dict[str, object]:
    """For the page: ``asset(name)``, the address of a file of app/static; ``vendored(package)``,
    of a pinned package's script."""

    def asset(name: str) -> str:
        return url_for("static", filename=name, v=fingerprint(name))

    def vendored(package: str) -> str:
        files = json.loads(VENDOR.read_text())["packages"][package]["files"]
        [script] = [name for name in files if name.endswith(".js")]
        return asset(f"vendor/{script}")

    return {"asset": asset, "vendored": vendored}


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
