from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from app import create_app


def test_every_route_is_documented_and_nothing_else(app: Flask, client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    served = {
        (rule.rule.replace("<", "{").replace(">", "}"), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    documented = {
        (path, method)
        for path, operations in document["paths"].items()
        for method in operations
        if method != "parameters"
    }
    assert documented == served
    assert document["openapi"] == "3.1.0"


def test_the_document_carries_this_deployments_limits() -> None:
    app = create_app({"TESTING": True, "ALLOWED_MODELS": "gpt-4o", "MAX_MESSAGE_CHARS": "500"})
    request = app.test_client().get("/openapi.json").get_json()["components"]["schemas"]["ChatRequest"]
    assert request["properties"]["message"]["maxLength"] == 500
    assert request["properties"]["model"]["enum"] == ["gpt-4o-mini", "gpt-4o", None]


def test_documented_statuses_cover_what_the_chat_routes_answer(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    for path in ("/api/chat", "/api/chat/stream"):
        statuses = set(document["paths"][path]["post"]["responses"])
        assert {"200", "400", "401", "413", "429", "502", "504"} <= statuses
