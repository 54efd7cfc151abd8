"""A streaming AI chat service: Flask in front of OpenAI or the offline demo model."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from .settings import DEFAULTS, load_settings
from .upstream.stream import Model

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
# Static files are addressed by their content (pages.asset) or version (vendor/): cached for a year.
STATIC_MAX_AGE_S = 365 * 24 * 3600


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from the environment, or from ``test_config`` instead of it.

    ``test_config`` holds settings by their environment names and any other Flask keys
    (``TESTING``); it goes through the same checks as the environment does.
    """
    app = Flask(__name__)
    # A slash-fixing redirect would be built from the Host header: answer 404 instead.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    source = os.environ if test_config is None else test_config
    app.config.from_mapping(
        load_settings(source), MAX_CONTENT_LENGTH=MAX_BODY_BYTES, SEND_FILE_MAX_AGE_DEFAULT=STATIC_MAX_AGE_S
    )
    if test_config is not None:
        app.config.from_mapping({k: v for k, v in test_config.items() if k not in DEFAULTS})

    from . import observability

    if not app.testing:
        observability.configure_logging(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])
    app.extensions["llm"] = build_llm(app.config)
    app.extensions["db"] = open_database(app.config["DATABASE_URL"])
    from .replies.worker import Replies

    app.extensions["replies"] = Replies(app.extensions["db"], app.config)
    observability.init_app(app)

    from . import errors, guards, metrics
    from .web import chat, conversations, openapi, pages

    errors.register(app)
    guards.init_app(app, chat.bp)
    app.register_blueprint(chat.bp)
    app.register_blueprint(conversations.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(openapi.bp)
    log.info(
        "serving provider=%s model=%s api=%s",
        app.config["PROVIDER"],
        app.config["OPENAI_MODEL"],
        app.config["OPENAI_API"],
    )
    return app


def open_database(url: str) -> Any:
    """Sessions on DATABASE_URL, its schema brought up to date (a no-op once the master did it)."""
    from .store import db

    engine = db.make_engine(url)
    db.upgrade(engine)
    return db.sessions(engine)


def build_llm(config: Mapping[str, Any]) -> Model:
    """The model the app talks to: OpenAI (or a compatible server), or the demo model."""
    if config["PROVIDER"] == "openai":
        from .upstream.llm import OpenAILLM

        return OpenAILLM(config)
    from .upstream.demo import DemoLLM

    return DemoLLM(config)
