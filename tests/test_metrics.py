from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from app import create_app

from .conftest import FakeLLM
from .fake_upstream import FakeUpstream, Script

ASK = {"message": "hi"}


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_requests_are_counted_by_route_and_status(client: FlaskClient) -> None:
    before = value("chat_http_requests_total", route="/api/chat/stream", status="200")
    bad_before = value("chat_http_requests_total", route="/api/chat", status="400")
    tokens_before = value("chat_output_tokens_total")
    client.post("/api/chat/stream", json=ASK, buffered=True)
    client.post("/api/chat", json={}, buffered=True)
    assert value("chat_http_requests_total", route="/api/chat/stream", status="200") == before + 1
    assert value("chat_http_requests_total", route="/api/chat", status="400") == bad_before + 1
    assert value("chat_output_tokens_total") > tokens_before


def test_unknown_paths_share_one_label(client: FlaskClient) -> None:
    before = value("chat_http_requests_total", route="unmatched", status="404")
    client.get("/no/such/page/1", buffered=True)
    client.get("/no/such/page/2", buffered=True)
    assert value("chat_http_requests_total", route="unmatched", status="404") == before + 2


def test_the_open_streams_gauge_follows_a_stream(client: FlaskClient, fake_llm: FakeLLM) -> None:
    before = value("chat_streams_open")
    response = client.post("/api/chat/stream", json=ASK, buffered=False)
    assert value("chat_streams_open") == before + 1
    list(response.response)
    response.close()
    assert value("chat_streams_open") == before


def test_upstream_errors_are_counted_by_kind(
    make_openai_app: Callable[..., Flask], upstream: FakeUpstream
) -> None:
    client = make_openai_app().test_client()
    before = value("chat_upstream_errors_total", reason="upstream_status")
    upstream.script = Script(status=503)
    client.post("/api/chat", json=ASK, buffered=True)
    assert value("chat_upstream_errors_total", reason="upstream_status") == before + 1


def test_metrics_are_prometheus_text(client: FlaskClient) -> None:
    client.post("/api/chat", json=ASK, buffered=True)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    for series in (
        "chat_http_requests_total",
        "chat_http_request_duration_seconds_bucket",
        "chat_time_to_first_token_seconds_bucket",
        "chat_stream_duration_seconds_bucket",
        "chat_output_tokens_total",
        "chat_streams_open",
    ):
        assert f"\n{series}" in text


def test_a_metrics_token_guards_the_metrics() -> None:
    client = create_app({"TESTING": True, "METRICS_TOKEN": "scrape-me"}).test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "scrape-me"}).status_code == 401  # no scheme
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-me"}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": "bearer scrape-me"}).status_code == 200
