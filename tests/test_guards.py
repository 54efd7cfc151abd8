from __future__ import annotations

import hashlib
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, g

from app import create_app
from app.settings import SettingsError, load_settings

from .fake_upstream import FakeUpstream

ASK = {"message": "hi"}
ROUTES = ["/api/chat", "/api/chat/stream"]


def demo_app(**settings: str) -> Flask:
    return create_app({"TESTING": True, "DEMO_DELAY_MS": "0", **settings})


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", "Bearer", "Basic a2V5LW9uZQ==", "key-one", "Bearer key-one-and-more", "bearer  "],
)
def test_api_keys_reject_missing_or_wrong_tokens(
    make_openai_app: Callable[..., Flask], upstream: FakeUpstream, route: str, authorization: str | None
) -> None:
    client = make_openai_app(API_KEYS="key-one, key-two").test_client()
    headers = {"Authorization": authorization} if authorization else {}
    response = client.post(route, json=ASK, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.get_json() == {
        "error": "A valid API key is required: send 'Authorization: Bearer <key>'."
    }
    assert upstream.requests == []


@pytest.mark.parametrize("key", ["key-one", "key-two"])
def test_any_listed_key_is_let_in(key: str) -> None:
    client = demo_app(API_KEYS="key-one,key-two").test_client()
    assert client.post("/api/chat", json=ASK, headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_pages_health_and_metrics_stay_open() -> None:
    client = demo_app(API_KEYS="key-one").test_client()
    for path in ("/", "/healthz", "/metrics"):
        assert client.get(path).status_code == 200


def test_keys_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = demo_app(API_KEYS="sk-SENTINEL-key").test_client()
    client.post("/api/chat", json=ASK, headers={"Authorization": "Bearer sk-SENTINEL-key"}, buffered=True)
    client.post("/api/chat", json=ASK, headers={"Authorization": "Bearer sk-SENTINEL-wrong"}, buffered=True)
    assert "SENTINEL" not in "\n".join(r.getMessage() + str(getattr(r, "fields", "")) for r in caplog.records)


def test_the_limit_is_shared_by_both_chat_routes_and_answers_429(
    make_openai_app: Callable[..., Flask], upstream: FakeUpstream
) -> None:
    client = make_openai_app(RATE_LIMIT="3/minute").test_client()
    assert client.post("/api/chat", json=ASK).status_code == 200
    assert client.post("/api/chat/stream", json=ASK).status_code == 200
    assert client.post("/api/chat", json=ASK).status_code == 200
    for route in ROUTES:
        limited = client.post(route, json=ASK)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert limited.get_json() == {
            "error": "Too many requests: slow down and retry after the time in Retry-After."
        }
    assert len(upstream.requests) == 3  # nothing was sent upstream for the limited ones
    assert client.get("/healthz").status_code == 200  # only the chat routes are limited


def test_the_limit_counts_per_key_else_per_address() -> None:
    client = demo_app(RATE_LIMIT="1/minute", API_KEYS="a,b").test_client()
    as_a, as_b = ({"Authorization": f"Bearer {key}"} for key in "ab")
    assert client.post("/api/chat", json=ASK, headers=as_a).status_code == 200
    assert client.post("/api/chat", json=ASK, headers=as_a).status_code == 429
    assert client.post("/api/chat", json=ASK, headers=as_b).status_code == 200
    open_client = demo_app(RATE_LIMIT="1/minute").test_client()
    here, there = ({"REMOTE_ADDR": address} for address in ("10.0.0.1", "10.0.0.2"))
    assert open_client.post("/api/chat", json=ASK, environ_base=here).status_code == 200
    assert open_client.post("/api/chat", json=ASK, environ_base=here).status_code == 429
    assert open_client.post("/api/chat", json=ASK, environ_base=there).status_code == 200


def test_forwarded_addresses_count_only_through_trusted_proxies() -> None:
    proxy = {"REMOTE_ADDR": "10.9.9.9"}
    trusting = demo_app(RATE_LIMIT="1/minute", TRUSTED_PROXIES="1").test_client()
    for client_address in ("203.0.113.5", "203.0.113.6"):  # two people behind one proxy
        forwarded = {"X-Forwarded-For": f"1.2.3.4, {client_address}"}  # the left part is the client's word
        assert trusting.post("/api/chat", json=ASK, headers=forwarded, environ_base=proxy).status_code == 200
    untrusting = demo_app(RATE_LIMIT="1/minute").test_client()
    for client_address in ("203.0.113.5", "203.0.113.6"):  # without trust, both are the proxy
        forwarded = {"X-Forwarded-For": client_address}
        status = untrusting.post("/api/chat", json=ASK, headers=forwarded, environ_base=proxy).status_code
    assert status == 429


def test_cors_only_for_listed_origins_on_the_api() -> None:
    client = demo_app(CORS_ORIGINS="https://app.example").test_client()
    preflight = client.options(
        "/api/chat/stream",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    actual = client.post("/api/chat", json=ASK, headers={"Origin": "https://app.example"})
    assert actual.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "X-Request-ID" in actual.headers["Access-Control-Expose-Headers"]
    other = client.post("/api/chat", json=ASK, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    page = client.get("/healthz", headers={"Origin": "https://app.example"})
    assert "Access-Control-Allow-Origin" not in page.headers


def test_preflight_passes_when_keys_are_required() -> None:
    client = demo_app(CORS_ORIGINS="https://app.example", API_KEYS="k").test_client()
    preflight = client.options(
        "/api/chat", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 200


def test_preflights_neither_count_nor_get_refused() -> None:
    client = demo_app(RATE_LIMIT="2/minute", CORS_ORIGINS="https://app.example").test_client()
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    assert [client.options("/api/chat", headers=preflight).status_code for _ in range(5)] == [200] * 5
    statuses = [client.post("/api/chat", json=ASK).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_no_cors_headers_without_the_setting() -> None:
    response = demo_app().test_client().post("/api/chat", json=ASK, headers={"Origin": "https://app.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize(
    ("name", "value"),
    [("RATE_LIMIT", "lots"), ("RATE_LIMIT", "60/fortnight"), ("RATE_LIMIT_STORAGE_URI", "mysql://x")],
)
def test_bad_guard_settings_stop_start_up(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{name} must be"):
        load_settings({name: value})


def test_several_limits_are_accepted() -> None:
    assert load_settings({"RATE_LIMIT": "10/second, 1000/day"})["RATE_LIMIT"] == "10/second; 1000/day"


def test_two_instances_share_one_limit_through_redis(redis_url: str) -> None:
    settings: dict[str, Any] = {"RATE_LIMIT": "3/minute", "RATE_LIMIT_STORAGE_URI": redis_url}
    first, second = (demo_app(**settings).test_client() for _ in range(2))
    address = {"REMOTE_ADDR": f"198.51.100.{int(time.time()) % 250}"}
    statuses = [
        client.post("/api/chat", json=ASK, environ_base=address).status_code
        for client in (first, second, first, second)
    ]
    assert statuses == [200, 200, 200, 429]


def test_a_redis_that_is_down_falls_back_to_counting_per_worker(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        nobody = sock.getsockname()[1]  # closed again: nothing listens there
    client = demo_app(
        RATE_LIMIT="2/minute", RATE_LIMIT_STORAGE_URI=f"redis://127.0.0.1:{nobody}/0"
    ).test_client()
    statuses = [client.post("/api/chat", json=ASK).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]  # no 500: the limits still hold, in memory
    assert any("falling back to in-memory" in r.getMessage() for r in caplog.records)


def as_key(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_failed_authentications_are_throttled_per_address_and_a_valid_key_still_served() -> None:
    client = demo_app(API_KEYS="good-key", AUTH_FAILURE_LIMIT="3/minute").test_client()
    here, there = ({"REMOTE_ADDR": address} for address in ("10.0.0.1", "10.0.0.2"))
    statuses = [
        client.post("/api/chat", json=ASK, headers=as_key(f"guess-{n}"), environ_base=here).status_code
        for n in range(5)
    ]
    assert statuses == [401, 401, 401, 429, 429]
    throttled = client.post("/api/chat", json=ASK, environ_base=here)  # no key at all: the same
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    assert throttled.get_json() == {
        "error": "Too many failed authentications from this address: retry after the time in Retry-After."
    }
    served = client.post("/api/chat", json=ASK, headers=as_key("good-key"), environ_base=here)
    assert served.status_code == 200
    assert client.post("/api/chat", json=ASK, headers=as_key("guess"), environ_base=there).status_code == 401


def test_the_key_id_is_slow_salted_and_the_same_in_every_app() -> None:
    first, second = (demo_app(API_KEYS="good-key,other-key") for _ in range(2))
    ids = first.extensions["key_ids"]
    assert ids == second.extensions["key_ids"]  # workers and hosts count a key under one name
    assert set(ids) == {"good-key", "other-key"} and len(set(ids.values())) == 2
    assert all(ident.startswith("key:") and len(ident) == 36 for ident in ids.values())
    assert ids["good-key"][4:] not in hashlib.sha256(b"good-key").hexdigest()  # not the fast hash
    with first.test_request_context("/api/chat", method="POST", headers=as_key("good-key")):
        first.preprocess_request()
        assert g.client == ids["good-key"]


def test_replies_in_flight_are_capped_per_client_and_given_back_at_close() -> None:
    app = demo_app(MAX_STREAMS_PER_CLIENT="2", API_KEYS="a,b")
    client = app.test_client()
    held = [client.post("/api/chat/stream", json=ASK, headers=as_key("a")) for _ in range(2)]
    assert [response.status_code for response in held] == [200, 200]
    for route in ROUTES:
        refused = client.post(route, json=ASK, headers=as_key("a"))
        assert refused.status_code == 429
        assert refused.get_json() == {
            "error": "Too many replies in flight for this client: wait for one to end, then try again."
        }
    assert client.post("/api/chat", json=ASK, headers=as_key("b"), buffered=True).status_code == 200
    held[0].close()  # the reply ended: its slot is free again
    assert client.post("/api/chat", json=ASK, headers=as_key("a"), buffered=True).status_code == 200
    held[1].close()


def test_a_reply_refused_before_its_model_call_gives_its_slot_back() -> None:
    client = demo_app(MAX_STREAMS_PER_CLIENT="1").test_client()
    for _ in range(3):
        assert client.post("/api/chat", json={"message": ""}, buffered=True).status_code == 400
    assert client.post("/api/chat", json=ASK, buffered=True).status_code == 200


def test_two_instances_share_one_stream_cap_through_redis(redis_url: str) -> None:
    settings = {"MAX_STREAMS_PER_CLIENT": "1", "RATE_LIMIT_STORAGE_URI": redis_url}
    first, second = (demo_app(**settings).test_client() for _ in range(2))
    address = {"REMOTE_ADDR": f"198.51.100.{int(time.time() * 7) % 250}"}
    held = first.post("/api/chat/stream", json=ASK, environ_base=address)
    assert held.status_code == 200
    assert second.post("/api/chat/stream", json=ASK, environ_base=address).status_code == 429
    held.close()
    assert second.post("/api/chat", json=ASK, environ_base=address, buffered=True).status_code == 200


@pytest.mark.parametrize(
    "origin", ["https://*.example.com", "https://app.example.com/", "app.example.com", "https://a.example/x"]
)
def test_cors_origins_that_are_not_exact_stop_start_up(origin: str) -> None:
    with pytest.raises(SettingsError, match=r"^CORS_ORIGINS takes exact origins") as error:
        load_settings({"CORS_ORIGINS": f"https://ok.example, {origin}"})
    assert repr(origin) in str(error.value)


def test_cors_origins_match_exactly_and_allow_the_conversation_methods() -> None:
    client = demo_app(CORS_ORIGINS="https://app.example.com, http://localhost:3000").test_client()
    for origin, allowed in [
        ("https://app.example.com", True),
        ("http://localhost:3000", True),
        ("https://xapp.example.com", False),
        ("https://app.example.com.evil", False),
        ("https://appxexample.com", False),
    ]:
        response = client.post("/api/chat", json=ASK, headers={"Origin": origin})
        assert (response.headers.get("Access-Control-Allow-Origin") == origin) is allowed, origin
    preflight = client.options(
        "/api/conversations/1",
        headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "PATCH"},
    )
    methods = preflight.headers["Access-Control-Allow-Methods"]
    assert {"GET", "POST", "PATCH", "DELETE"} <= set(methods.replace(" ", "").split(","))


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/", {"Accept": "text/html"}),
        ("GET", "/", {}),
        ("GET", "/healthz", {}),
        ("GET", "/metrics", {}),
        ("POST", "/api/chat", {}),
        ("POST", "/api/chat/stream", {}),
        ("GET", "/nowhere", {}),
        ("POST", "/api/chat/stream", {"Authorization": "Bearer wrong"}),
    ],
)
def test_every_response_carries_the_security_headers(method: str, path: str, headers: dict[str, str]) -> None:
    client = demo_app(API_KEYS="k" if "Authorization" in headers else "").test_client()
    response = client.open(path, method=method, json=ASK if method == "POST" else None, headers=headers)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_a_forwarded_hop_that_is_not_an_address_is_ignored() -> None:
    proxy = {"REMOTE_ADDR": "10.9.9.9"}
    client = demo_app(RATE_LIMIT="2/minute", TRUSTED_PROXIES="1").test_client()
    statuses = [
        client.post(
            "/api/chat", json=ASK, headers={"X-Forwarded-For": f"garbage-{n}"}, environ_base=proxy
        ).status_code
        for n in range(3)
    ]
    assert statuses == [200, 200, 429]  # counted as the connection's address, not as new clients
    for address in ("2001:db8::1", "203.0.113.9"):  # real addresses still count apart
        forwarded = {"X-Forwarded-For": address}
        assert client.post("/api/chat", json=ASK, headers=forwarded, environ_base=proxy).status_code == 200
