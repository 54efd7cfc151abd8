"""Settings: the only reader of the environment, checked once at start-up."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from limits import parse_many
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULTS: dict[str, str] = {
    "OPENAI_API_KEY": "",
    "OPENAI_BASE_URL": "",
    "OPENAI_MODEL": "gpt-4o-mini",
    "OPENAI_API": "chat",
    "OPENAI_STREAM_USAGE": "true",
    "OPENAI_MAX_RETRIES": "0",
    "LLM_PROVIDER": "auto",
    "ALLOWED_MODELS": "",
    "LOG_LEVEL": "INFO",
    "LOG_FORMAT": "text",
    "MAX_MESSAGE_CHARS": "32000",
    "UPSTREAM_TIMEOUT_S": "60",
    "DEMO_DELAY_MS": "20",
    "UPSTREAM_MAX_CONNECTIONS": "4000",
    "SSE_PING_S": "15",
    "FIRST_DELTA_WAIT_S": "10",
    "API_KEYS": "",
    "RATE_LIMIT": "",
    "REDIS_URL": "",
    "RATE_LIMIT_STORAGE_URI": "",  # REDIS_URL when set, else memory://
    "REPLY_ON_DISCONNECT": "finish",
    "CORS_ORIGINS": "",
    "TRUSTED_PROXIES": "0",
    "METRICS_TOKEN": "",
    "DATABASE_URL": "sqlite:///instance/chat.db",
    "REQUEST_BODY_TIMEOUT_S": "30",
    "CLIENT_WRITE_TIMEOUT_S": "60",
    "MAX_STREAMS_PER_CLIENT": "0",
    "AUTH_FAILURE_LIMIT": "60/minute",
    "PROMETHEUS_MULTIPROC_DIR": "",  # set by gunicorn.conf.py when several workers share metrics
}

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# scheme://host[:port], as a browser sends it in Origin: no path, no pattern, no trailing slash.
ORIGIN = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://"
    r"(?P<host>\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*)"
    r"(?::(?P<port>[0-9]{1,5}))?",
    re.IGNORECASE,
)
DEFAULT_PORTS = {"http": 80, "https": 443}
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


class SettingsError(RuntimeError):
    """A setting has a value the service cannot run with."""


def load_settings(environ: Mapping[str, Any]) -> dict[str, Any]:
    """Read every setting from ``environ`` into typed config keys, or raise SettingsError."""
    raw = {name: str(environ.get(name, default)).strip() for name, default in DEFAULTS.items()}
    model = raw["OPENAI_MODEL"] or DEFAULTS["OPENAI_MODEL"]
    config: dict[str, Any] = {
        "OPENAI_API_KEY": raw["OPENAI_API_KEY"] or None,
        "OPENAI_BASE_URL": _url(raw, "OPENAI_BASE_URL"),
        "OPENAI_MODEL": model,
        "OPENAI_API": _choice(raw, "OPENAI_API", ("chat", "responses")),
        "OPENAI_STREAM_USAGE": _flag(raw, "OPENAI_STREAM_USAGE"),
        "OPENAI_MAX_RETRIES": _number(raw, "OPENAI_MAX_RETRIES", int, 0, 10),
        "LLM_PROVIDER": _choice(raw, "LLM_PROVIDER", ("auto", "openai", "demo")),
        "ALLOWED_MODELS": _models(raw["ALLOWED_MODELS"], model),
        "LOG_LEVEL": _choice(raw, "LOG_LEVEL", LOG_LEVELS, str.upper),
        "LOG_FORMAT": _choice(raw, "LOG_FORMAT", ("text", "json")),
        "MAX_MESSAGE_CHARS": _number(raw, "MAX_MESSAGE_CHARS", int, 1, 1_000_000),
        "UPSTREAM_TIMEOUT_S": _number(raw, "UPSTREAM_TIMEOUT_S", float, 0.1, 3600),
        "DEMO_DELAY_MS": _number(raw, "DEMO_DELAY_MS", float, 0, 10_000),
        "UPSTREAM_MAX_CONNECTIONS": _number(raw, "UPSTREAM_MAX_CONNECTIONS", int, 1, 1_000_000),
        "SSE_PING_S": _number(raw, "SSE_PING_S", float, 0.01, 3600),
        "FIRST_DELTA_WAIT_S": _number(raw, "FIRST_DELTA_WAIT_S", float, 0, 3600),
        "API_KEYS": _list(raw["API_KEYS"]),
        "RATE_LIMIT": _rate_limit(raw, "RATE_LIMIT"),
        "REDIS_URL": _redis_url(raw, "REDIS_URL"),
        "RATE_LIMIT_STORAGE_URI": _storage(raw, "RATE_LIMIT_STORAGE_URI"),
        "REPLY_ON_DISCONNECT": _choice(raw, "REPLY_ON_DISCONNECT", ("finish", "stop")),
        "CORS_ORIGINS": _origins(raw, "CORS_ORIGINS"),
        "TRUSTED_PROXIES": _number(raw, "TRUSTED_PROXIES", int, 0, 10),
        "METRICS_TOKEN": raw["METRICS_TOKEN"] or None,
        "DATABASE_URL": _database_url(raw, "DATABASE_URL"),
        "REQUEST_BODY_TIMEOUT_S": _number(raw, "REQUEST_BODY_TIMEOUT_S", float, 0.1, 3600),
        "CLIENT_WRITE_TIMEOUT_S": _number(raw, "CLIENT_WRITE_TIMEOUT_S", float, 0.1, 3600),
        "MAX_STREAMS_PER_CLIENT": _number(raw, "MAX_STREAMS_PER_CLIENT", int, 0, 1_000_000),
        "AUTH_FAILURE_LIMIT": _rate_limit(raw, "AUTH_FAILURE_LIMIT"),
        "PROMETHEUS_MULTIPROC_DIR": raw["PROMETHEUS_MULTIPROC_DIR"] or None,
    }
    config["PROVIDER"] = resolve_provider(config)
    return config


def resolve_provider(config: Mapping[str, Any]) -> str:
    """Pick ``openai`` or ``demo`` from LLM_PROVIDER, the key and the base URL.

    ``auto`` means OpenAI when a key or a base URL is set (a local server such as
    Ollama needs no key), else the offline demo model.
    """
    choice = config["LLM_PROVIDER"]
    has_key = bool(config["OPENAI_API_KEY"])
    if choice == "openai" and not has_key:
        raise SettingsError(
            "LLM_PROVIDER is 'openai' but OPENAI_API_KEY is not set: set the key (any value, "
            "for a local server that needs none), or use LLM_PROVIDER=auto."
        )
    if choice == "auto":
        return "openai" if has_key or config["OPENAI_BASE_URL"] else "demo"
    return str(choice)


def _choice(
    raw: Mapping[str, str],
    name: str,
    allowed: tuple[str, ...],
    normalize: Callable[[str], str] = str.lower,
) -> str:
    value = normalize(raw[name])
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}; got {raw[name]!r}.")
    return value


def _flag(raw: Mapping[str, str], name: str) -> bool:
    value = raw[name].lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise SettingsError(f"{name} must be true or false; got {raw[name]!r}.")


def _number(raw: Mapping[str, str], name: str, kind: type[int] | type[float], low: float, high: float) -> Any:
    try:
        value = kind(raw[name])
    except ValueError:
        value = math.nan
    if not low <= value <= high:
        what = "a whole number" if kind is int else "a number"
        raise SettingsError(f"{name} must be {what} from {low:g} to {high:g}; got {raw[name]!r}.")
    return value


def _url(raw: Mapping[str, str], name: str) -> str | None:
    value = raw[name]
    if not value:
        return None
    scheme, _, rest = value.partition("://")
    if scheme.lower() not in ("http", "https") or not rest.strip("/"):
        raise SettingsError(f"{name} must be an http:// or https:// URL; got {value!r}.")
    return value


def _list(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item.strip() for item in value.split(",") if item.strip()))


def _origins(raw: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Exact origins or ``*``: anything else would be matched as a pattern, or never match."""
    origins = _list(raw[name])
    for origin in origins:
        found = ORIGIN.fullmatch(origin)
        if origin == "*":
            continue
        if found is None:
            raise SettingsError(
                f"{name} takes exact origins like https://app.example.com or http://localhost:3000 "
                f"(no path, pattern or trailing slash), or *; {origin!r} is not one."
            )
        port = found["port"]
        if port is not None and not 1 <= int(port) <= 65535:
            raise SettingsError(f"{name}: {origin!r} has a port outside 1 to 65535.")
        if port is not None and DEFAULT_PORTS.get(found["scheme"].lower()) == int(port):
            raise SettingsError(
                f"{name}: {origin!r} names its scheme's default port, which browsers leave out "
                "of Origin: drop the port."
            )
    return tuple(origin.lower() for origin in origins)


def _rate_limit(raw: Mapping[str, str], name: str) -> str | None:
    value = raw[name]
    if not value:
        return None
    try:
        parsed = parse_many(value.replace(",", ";"))
    except ValueError:
        parsed = []
    if not parsed:
        raise SettingsError(f"{name} must be limits like '60/minute' or '10/second;1000/day'; got {value!r}.")
    return value.replace(",", ";")


def _redis_url(raw: Mapping[str, str], name: str) -> str | None:
    value = raw[name]
    if not value:
        return None
    if not value.startswith(("redis://", "rediss://")):
        raise SettingsError(f"{name} must be a redis:// or rediss:// URL; got {_without_password(value)!r}.")
    return value


def _storage(raw: Mapping[str, str], name: str) -> str:
    value = raw[name] or raw["REDIS_URL"] or "memory://"
    if not value.startswith(("memory://", "redis://", "rediss://", "redis+sentinel://", "redis+cluster://")):
        raise SettingsError(f"{name} must be memory:// or a redis:// URL; got {_without_password(value)!r}.")
    return value


def _models(value: str, default_model: str) -> tuple[str, ...]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    if default_model not in names:
        names.insert(0, default_model)
    return tuple(dict.fromkeys(names))


def _database_url(raw: Mapping[str, str], name: str) -> str:
    """SQLite or Postgres; ``postgres://`` and ``postgresql://`` (as hosts hand them out) mean psycopg 3."""
    value = raw[name] or DEFAULTS[name]
    try:
        url = make_url(value)
    except ArgumentError:
        url = None
    if url is not None and url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    sqlite = url is not None and url.drivername in ("sqlite", "sqlite+pysqlite")
    if sqlite and url is not None and url.database in (None, "", ":memory:"):
        url = None  # in memory, each connection would see a database of its own
    if url is None or not (sqlite or url.drivername == "postgresql+psycopg"):
        shown = _without_password(value)
        raise SettingsError(
            f"{name} must be a sqlite:/// path or a postgresql+psycopg:// URL; got {shown!r}."
        )
    return url.render_as_string(hide_password=False)


def _without_password(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return value
    return f"{scheme}{sep}{userinfo.partition(':')[0]}:***@{host}"
