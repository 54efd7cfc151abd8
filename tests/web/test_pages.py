from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from app import create_app
from app.web import pages


def test_index_says_the_service_is_running(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.get_data(as_text=True) == "AI Chat API is running"


BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


def test_a_browser_gets_the_chat_page(client: FlaskClient) -> None:
    response = client.get("/", headers={"Accept": BROWSER})
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    for part in ('<label class="visually-hidden" for="message">Message</label>', 'id="send"', 'id="stop"'):
        assert part in page
    assert "http://" not in page and "https://" not in page  # nothing loaded from another host


def policy_of(response: TestResponse) -> dict[str, str]:
    """The Content-Security-Policy header as {directive: its sources}."""
    header = response.headers["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in header.split(";"))


def test_the_page_allows_only_its_own_script_and_style(client: FlaskClient) -> None:
    response = client.get("/", headers={"Accept": BROWSER})
    policy = policy_of(response)
    nonce = re.fullmatch(r"'nonce-([A-Za-z0-9_-]{22,})'", policy["script-src"])
    assert nonce, policy
    assert policy == {
        "default-src": "'none'",
        "script-src": f"'nonce-{nonce[1]}'",
        "style-src": f"'nonce-{nonce[1]}'",
        "connect-src": "'self'",
        "img-src": "data:",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }
    page = response.get_data(as_text=True)
    # No script or style in the page itself: files of its own origin, each named in the policy's nonce.
    assert re.findall(r"<style\b", page) == []
    scripts = re.findall(r'<script nonce="([^"]+)" src="(/static/[^"]+)"></script>', page)
    assert [src.split("?")[0] for _, src in scripts] == [
        "/static/vendor/markdown-it-15.0.3.min.js",
        "/static/vendor/purify-3.5.0.min.js",
        "/static/render.js",
        "/static/chat.js",
    ]
    assert {used for used, _ in scripts} == {nonce[1]}
    assert len(re.findall(r"<script\b", page)) == len(scripts)
    assert (
        re.findall(
            r'<link rel="stylesheet" href="(/static/chat\.css\?v=[0-9a-f]{16})" nonce="([^"]+)">', page
        )[0][1]
        == nonce[1]
    )
    # The policy blocks inline handlers and style attributes: the page must not need them.
    assert not re.search(r"<[^>]*\s(on[a-z]+|style)\s*=", page, re.IGNORECASE)


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/static/chat.js", "text/javascript"),
        ("/static/render.js", "text/javascript"),
        ("/static/chat.css", "text/css"),
        ("/static/vendor/markdown-it-15.0.3.min.js", "text/javascript"),
        ("/static/vendor/purify-3.5.0.min.js", "text/javascript"),
    ],
)
def test_the_pages_files_come_from_its_own_origin_and_are_kept_a_year(
    client: FlaskClient, path: str, kind: str
) -> None:
    with client.get(path) as response:
        assert (response.status_code, response.mimetype) == (200, kind)
        assert response.headers["Cache-Control"] == "public, max-age=31536000"
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_a_changed_file_gets_a_new_address(
    client: FlaskClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = client.get("/", headers={"Accept": BROWSER}).get_data(as_text=True)
    assert f'src="/static/chat.js?v={pages.fingerprint("chat.js")}"' in page
    monkeypatch.setattr(pages, "STATIC", tmp_path)
    pages.fingerprint.cache_clear()
    try:
        (tmp_path / "chat.js").write_text("one version")
        first = pages.fingerprint("chat.js")
        pages.fingerprint.cache_clear()  # a new process, as after a deploy
        (tmp_path / "chat.js").write_text("the next version")
        assert pages.fingerprint("chat.js") != first
    finally:
        pages.fingerprint.cache_clear()


def test_each_page_gets_its_own_nonce(client: FlaskClient) -> None:
    nonces = {policy_of(client.get("/", headers={"Accept": BROWSER}))["script-src"] for _ in range(2)}
    assert len(nonces) == 2


def test_the_plain_line_has_no_page_policy(client: FlaskClient) -> None:
    assert "Content-Security-Policy" not in client.get("/").headers


@pytest.mark.parametrize(
    "accept", [None, "*/*", "text/plain", "application/json", "text/plain, text/html;q=0.5"]
)
def test_anything_else_gets_the_plain_line(client: FlaskClient, accept: str | None) -> None:
    headers = {"Accept": accept} if accept else {}
    response = client.get("/", headers=headers)
    assert (response.mimetype, response.get_data(as_text=True)) == ("text/plain", "AI Chat API is running")


def test_healthz_names_provider_model_and_api(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {
        "status": "ok",
        "provider": "demo",
        "model": "gpt-4o-mini",
        "api": "chat",
    }


def test_healthz_on_openai() -> None:
    app = create_app(
        {"TESTING": True, "OPENAI_API_KEY": "sk-x", "OPENAI_MODEL": "gpt-4o", "OPENAI_API": "responses"}
    )
    assert app.test_client().get("/healthz").get_json() == {
        "status": "ok",
        "provider": "openai",
        "model": "gpt-4o",
        "api": "responses",
    }


def test_unknown_routes_and_methods_get_json(client: FlaskClient) -> None:
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and missing.get_json() == {"error": "There is nothing at this address."}
    wrong = client.get("/api/chat")
    assert wrong.status_code == 405
    assert wrong.get_json() == {"error": "This address does not accept that method."}
    assert set(wrong.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}


@pytest.mark.parametrize(
    "path", ["/api//chat", "//api/chat", "/api/chat//stream", "/healthz/", "//healthz", "/api/chat/"]
)
def test_no_redirect_is_built_from_the_host_header(client: FlaskClient, path: str) -> None:
    response = client.post(path, json={"message": "hi"}, headers={"Host": "evil.example"})
    assert response.status_code in (404, 405, 200)
    assert "Location" not in response.headers
    if "//" in path:
        assert response.status_code == 404
