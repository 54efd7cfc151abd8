"""What stands before the chat routes: bearer keys, rate limits, and CORS for /api/*."""

from __future__ import annotations

import hashlib
import hmac

from flask import Blueprint, Flask, current_app, g, request
from flask_cors import CORS
from flask_limiter import Limiter
from werkzeug.middleware.proxy_fix import ProxyFix

from .errors import ApiError

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}
# Key ids are derived slowly (once per key, at start-up), so that one seen in a database or a
# log can neither be turned back into its key nor used to check guesses at a key offline.
KEY_ID_SALT = b"ai-chat-api key id"
KEY_ID_ROUNDS = 200_000


def init_app(app: Flask, chat: Blueprint) -> None:
    """Guard ``/api/*`` as the settings say; ``/``, ``/healthz`` and ``/metrics`` stay open."""
    config = app.config
    if config["TRUSTED_PROXIES"]:
        # The client address comes from X-Forwarded-For only as far as the trusted hops go.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config["TRUSTED_PROXIES"])  # type: ignore[method-assign]
    if config["API_KEYS"]:
        app.extensions["key_ids"] = {key.encode(): key_id(key) for key in config["API_KEYS"]}
        app.before_request(check_key)
    if config["RATE_LIMIT"]:
        storage = config["RATE_LIMIT_STORAGE_URI"]
        # A Redis that is down must not take the API with it: each worker counts on its own
        # until it is back, and a dead connection is given up on within a second.
        timeouts: dict[str, str | int] = {"socket_connect_timeout": 1, "socket_timeout": 1}
        limiter = Limiter(
            key_func=client_key,
            storage_uri=storage,
            storage_options=timeouts if storage.startswith("redis") else {},
            in_memory_fallback_enabled=True,
            headers_enabled=True,
            retry_after="delta-seconds",
            key_prefix="chat",
        )
        limiter.init_app(app)
        # POST only: a browser's CORS preflight must neither spend the budget nor be refused.
        limiter.shared_limit(config["RATE_LIMIT"], scope="chat", methods=["POST"])(chat)
    if config["CORS_ORIGINS"]:
        CORS(
            app,
            resources={r"/api/*": {"origins": list(config["CORS_ORIGINS"])}},
            allow_headers=["Content-Type", "Authorization", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
            methods=["POST", "OPTIONS"],
            max_age=600,
        )


def check_key() -> None:
    """Require ``Authorization: Bearer <one of API_KEYS>`` on /api/*, compared in constant time."""
    if not request.path.startswith("/api/") or request.method == "OPTIONS":
        return  # a CORS preflight carries no credentials
    given = bearer_token()
    matched = ""
    for key, derived in current_app.extensions["key_ids"].items():
        if hmac.compare_digest(given, key):  # every key is compared, so timing tells nothing
            matched = derived
    if not given or not matched:
        raise ApiError("A valid API key is required: send 'Authorization: Bearer <key>'.", 401, UNAUTHORIZED)
    g.owner = matched  # whose conversations these are
    g.client = "key:" + matched[:16]  # whom rate limits count


def key_id(key: str) -> str:
    """The one-way id of an API key: what conversations and limits know a key by."""
    return hashlib.pbkdf2_hmac("sha256", key.encode(), KEY_ID_SALT, KEY_ID_ROUNDS).hex()[:32]


def bearer_token() -> bytes:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme in any case), else b""."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip().encode() if scheme.lower() == "bearer" else b""


def client_key() -> str:
    """Whom a rate limit counts: the API key's short hash, else the client's address."""
    return str(g.get("client") or f"ip:{request.remote_addr}")
