"""The service's own pages: ``GET /`` and ``GET /healthz``."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template, request

bp = Blueprint("pages", __name__)

RUNNING = "AI Chat API is running"


@bp.get("/")
def index() -> tuple[str, int, dict[str, str]]:
    """The chat page for a browser; a line saying the service is up for anything else."""
    if request.accept_mimetypes.best_match(["text/plain", "text/html"]) == "text/html":
        return render_template("chat.html"), 200, {"Content-Type": "text/html; charset=utf-8"}
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
