"""What stands before the API: bearer keys, throttles, caps, CORS, and security headers."""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

from flask import Blueprint, Flask, Response, after_this_request, current_app, g, request
from flask_cors import CORS
from flask_limiter import Limiter
from werkzeug.middleware.proxy_fix import ProxyFix

from .counters import REDIS_TIMEOUTS, Counters, FailureLimit, Slots
from .errors import ApiError

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# The per-key id: slow to compute on purpose, so a key cannot be checked against it offline
# at any useful rate. The salt is fixed so every worker and host derives the same id.
KEY_ID_SALT = b"ai-chat-api key id v1"
KEY_ID_COST = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024, "dklen": 16}


def init_app(app: Flask, chat: Blueprint) -> None:
    """Guard ``/api/*`` as the settings say; ``/``, ``/healthz`` and ``/metrics`` stay open."""
    config = app.config
    app.after_request(add_security_headers)
    if config["TRUSTED_PROXIES"]:
        # The client address comes from X-Forwarded-For only as far as the trusted hops go.
        checked = ForwardedFor(app.wsgi_app)
        app.wsgi_app = ProxyFix(checked, x_for=config["TRUSTED_PROXIES"])  # type: ignore[method-assign]
    counters = Counters(config["RATE_LIMIT_STORAGE_URI"])
    if config["API_KEYS"]:
        app.extensions["key_ids"] = {key: key_id(key) for key in config["API_KEYS"]}
        if config["AUTH_FAILURE_LIMIT"]:
            app.extensions["auth_failures"] = FailureLimit(counters, config["AUTH_FAILURE_LIMIT"])
        app.before_request(check_key)
    if config["RATE_LIMIT"]:
        storage = config["RATE_LIMIT_STORAGE_URI"]
        # A Redis that is down must not take the API with it: each worker counts on its own
        # until it is back, and a dead connection is given up on within a second.
        limiter = Limiter(
            key_func=client_key,
            storage_uri=storage,
            storage_options=REDIS_TIMEOUTS if storage.startswith("redis") else {},
            in_memory_fallback_enabled=True,
            headers_enabled=True,
            retry_after="delta-seconds",
            key_prefix="chat",
        )
        limiter.init_app(app)
        # POST only: a browser's CORS preflight must neither spend the budget nor be refused.
        limiter.shared_limit(config["RATE_LIMIT"], scope="chat", methods=["POST"])(chat)
    if config["MAX_STREAMS_PER_CLIENT"]:
        app.extensions["slots"] = Slots(counters, config["MAX_STREAMS_PER_CLIENT"])
        app.before_request(hold_slot)
    if config["CORS_ORIGINS"]:
        CORS(
            app,
            # Settings let only exact origins and "*" through: Flask-Cors compares them as text.
            resources={r"/api/*": {"origins": list(config["CORS_ORIGINS"])}},
            allow_headers=["Content-Type", "Authorization", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After", "Location", "X-Conversation-ID", "X-Message-ID"],
            methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            max_age=600,
        )


def check_key() -> None:
    """Require ``Authorization: Bearer <one of API_KEYS>`` on /api/*, compared in constant time."""
    if not request.path.startswith("/api/") or request.method == "OPTIONS":
        return  # a CORS preflight carries no credentials
    client = matched_key_id(bearer_token())
    if client is not None:
        # A valid key is served even from an address past its failure limit.
        g.client = g.owner = client  # whom limits count, and whose conversations these are
        return
    failures: FailureLimit | None = current_app.extensions.get("auth_failures")
    if failures is not None:
        address = f"ip:{request.remote_addr}"
        retry_after = failures.retry_after(address)
        if retry_after is not None:
            raise ApiError(
                "Too many failed authentications from this address: retry after the time in Retry-After.",
                429,
                {"Retry-After": str(retry_after)},
            )
        failures.fail(address)
    raise ApiError("A valid API key is required: send 'Authorization: Bearer <key>'.", 401, UNAUTHORIZED)


def matched_key_id(given: bytes) -> str | None:
    """The id of the configured key ``given`` is, compared in constant time; None if it is none."""
    found = None
    for key, ident in current_app.extensions["key_ids"].items():
        if hmac.compare_digest(given, key.encode()):  # every key, so timing tells nothing
            found = ident
    return found


@functools.lru_cache(maxsize=1024)
def key_id(key: str) -> str:
    """The name limits count a key under and what it owns is kept under: never the key, and
    neither reversible nor cheap to check a guess against. Computed once per key at start-up."""
    return "key:" + hashlib.scrypt(key.encode(), salt=KEY_ID_SALT, **KEY_ID_COST).hex()


STREAMING_ENDPOINTS = ("chat.chat", "chat.chat_stream", "conversations.follow")


class Slot:
    """A reply's place under MAX_STREAMS_PER_CLIENT, given back once: when its response closes,
    or, for a conversation turn, when the reply the server writes for it ends."""

    def __init__(self, give_back: Callable[[], None]) -> None:
        self._give_back: Callable[[], None] | None = give_back
        self.kept = False

    def keep(self) -> Callable[[], None]:
        """Hold the slot past the response; the function that gives it back."""
        self.kept = True
        return self.give_back

    def release(self) -> None:
        """The response closed: give the slot back unless the reply kept it."""
        if not self.kept:
            self.give_back()

    def give_back(self) -> None:
        give_back, self._give_back = self._give_back, None
        if give_back is not None:
            give_back()


def hold_slot() -> None:
    """Count a reply in flight (or a reader of one) against its client until it is over, or refuse it."""
    if request.endpoint not in STREAMING_ENDPOINTS or request.method not in ("POST", "GET"):
        return
    give_back = current_app.extensions["slots"].take(client_key())
    if give_back is None:
        raise ApiError(
            "Too many replies in flight for this client: wait for one to end, then try again.",
            429,
            {"Retry-After": "1"},
        )
    slot = g.slot = Slot(give_back)
    after_this_request(on_close(slot.release))


def keep_slot() -> Callable[[], None] | None:
    """Hand this request's slot, if it holds one, to the reply it starts: given back at its end."""
    slot: Slot | None = g.get("slot")
    return None if slot is None else slot.keep()


def on_close(function: Callable[[], None]) -> Callable[[Response], Response]:
    """An after-request function that runs ``function`` when the response has been sent."""

    def register(response: Response) -> Response:
        response.call_on_close(function)
        return response

    return register


def add_security_headers(response: Response) -> Response:
    """No sniffing, no framing, no referrer: on every response, streams and errors too."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def bearer_token() -> bytes:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme in any case), else b""."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip().encode() if scheme.lower() == "bearer" else b""


def client_key() -> str:
    """Whom a limit counts: the API key's id, else the client's address."""
    return str(g.get("client") or f"ip:{request.remote_addr}")


class ForwardedFor:
    """Inside ProxyFix: an X-Forwarded-For hop that is not an IP address is ignored, and the
    address the connection came from is kept, so made-up values cannot dodge the limits."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not is_ip(environ.get("REMOTE_ADDR")):
            environ["REMOTE_ADDR"] = environ["werkzeug.proxy_fix.orig"]["REMOTE_ADDR"]
        return self.app(environ, start_response)


def is_ip(value: object) -> bool:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        return False
    return True
