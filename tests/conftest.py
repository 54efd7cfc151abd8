"""Fixtures: the app on the demo model, a fake OpenAI-compatible upstream, a scripted model, Postgres."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.errors import UpstreamError
from app.settings import DEFAULTS
from app.upstream.stream import ChatRequest, Delta, Usage

from .fake_upstream import FakeUpstream, Script
from .support import SECRET_KEY
from .support.postgres import PostgresServer, PostgresUnavailable
from .support.redis_server import RedisServer, RedisUnavailable


@pytest.fixture(autouse=True)
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test's own SQLite database: the default for every app it builds."""
    url = f"sqlite:///{tmp_path}/chat.db"
    monkeypatch.setitem(DEFAULTS, "DATABASE_URL", url)
    return url


@pytest.fixture
def app() -> Flask:
    """The app on the demo model, with no pause between words."""
    return create_app({"TESTING": True, "DEMO_DELAY_MS": "0"})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def upstream(upstream_server: FakeUpstream) -> FakeUpstream:
    """The fake upstream with a fresh script and nothing recorded."""
    upstream_server.reset(Script())
    return upstream_server


@pytest.fixture(params=["chat", "responses"])
def api(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs against both OpenAI APIs."""
    return str(request.param)


@pytest.fixture
def make_openai_app(upstream: FakeUpstream) -> Iterator[Callable[..., Flask]]:
    """Build an app that talks to the fake upstream; keyword arguments are settings."""
    made: list[Flask] = []

    def make(**settings: str) -> Flask:
        config = {
            "TESTING": True,
            "OPENAI_API_KEY": SECRET_KEY,
            "OPENAI_BASE_URL": upstream.base_url,
            "UPSTREAM_TIMEOUT_S": "2",
            **settings,
        }
        made.append(create_app(config))
        return made[-1]

    yield make
    for app in made:
        app.extensions["llm"].close()  # pooled upstream connections


@pytest.fixture
def openai_client(make_openai_app: Callable[..., Flask], api: str) -> FlaskClient:
    """A test client of an app on the fake upstream, in each OPENAI_API mode."""
    return make_openai_app(OPENAI_API=api).test_client()


class FakeLLM:
    """A scripted model: yields the given deltas, or raises the given error after some of them;
    with ``hold`` set, it waits for that event before each delta after the first."""

    def __init__(self) -> None:
        self.deltas: list[str] = ["Hi", " there"]
        self.fail_after: int | None = None
        self.error: Exception = UpstreamError("The connection to the model broke.", reason="upstream_broken")
        self.calls: list[ChatRequest] = []
        self.closed = 0
        self.hold: threading.Event | None = None

    def stream(self, chat: ChatRequest) -> Generator[Delta]:
        self.calls.append(chat)
        try:
            for index, text in enumerate(self.deltas):
                if index == self.fail_after:
                    raise self.error
                if index and self.hold is not None:
                    assert self.hold.wait(10), "the test never let the model go on"
                yield text
            if self.fail_after is not None and self.fail_after >= len(self.deltas):
                raise self.error
            yield Usage(input_tokens=3, output_tokens=len(self.deltas))
        finally:
            self.closed += 1


class Held:
    """A model held after its first delta until ``go`` is set: a reply still being written."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.go = threading.Event()

    def stream(self, chat: ChatRequest) -> Generator[Delta]:
        for index, delta in enumerate(self.model.stream(chat)):
            if index == 1:
                assert self.go.wait(10), "the test never let the model go on"
            yield delta

    def close(self) -> None:
        self.model.close()


@pytest.fixture
def fake_llm(app: Flask) -> FakeLLM:
    """Put a scripted model in the app in place of the demo model."""
    llm = FakeLLM()
    app.extensions["llm"] = llm
    return llm


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the whole session, or a skip that says why there is none."""
    try:
        server = PostgresServer()
    except PostgresUnavailable as error:
        pytest.skip(str(error))
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The SQLAlchemy URL of a new, empty database of its own, dropped after the test."""
    url = postgres_server.new_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real Redis for the whole session, or a skip that says why there is none."""
    try:
        server = RedisServer()
    except RedisUnavailable as error:
        pytest.skip(str(error))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, running and emptied for the test."""
    import redis

    if redis_server.process is None:
        redis_server.start()
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url
