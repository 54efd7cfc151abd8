"""No key or token ever leaves the service: not in a response, a header or a log line."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from flask import Flask

from .conftest import SECRET_KEY
from .fake_upstream import FakeUpstream, Script
from .test_faults import FAULTS, refused_url

CLIENT_KEY = "client-SENTINEL-key-7f3a"
WRONG_KEY = "client-SENTINEL-wrong-91bd"
SENTINELS = (SECRET_KEY, SECRET_KEY[3:15], CLIENT_KEY, WRONG_KEY, "SENTINEL")


@pytest.mark.parametrize("framing", ["text", "sse", "json"])
def test_no_sentinel_escapes_on_any_error_path(
    make_openai_app: Callable[..., Flask],
    upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
    api: str,
    framing: str,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    seen: list[str] = []
    for name, script, *_ in FAULTS:
        settings = {"OPENAI_API": api, "UPSTREAM_TIMEOUT_S": "0.3", "API_KEYS": f"{CLIENT_KEY},other"}
        if script is None:
            settings["OPENAI_BASE_URL"] = refused_url()
        else:
            # An upstream that quotes the key back, as OpenAI's 401 does (partly).
            upstream.script = Script(
                **{**script.__dict__, "error_message": f"Incorrect API key: {SECRET_KEY}"}
            )
        client = make_openai_app(**settings).test_client()
        route = "/api/chat" if framing == "json" else "/api/chat/stream"
        accept = {"Accept": "text/event-stream"} if framing == "sse" else {}
        for key in (CLIENT_KEY, WRONG_KEY):
            headers = {"Authorization": f"Bearer {key}", **accept}
            response = client.post(route, json={"message": f"hello {name}"}, headers=headers, buffered=True)
            seen.append(response.get_data(as_text=True))
            seen.extend(f"{k}: {v}" for k, v in response.headers.items())
    seen.extend(f"{r.name} {r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert len([r for r in caplog.records if r.name == "app.access"]) == 2 * len(FAULTS)
    everything = "\n".join(seen)
    for sentinel in SENTINELS:
        assert sentinel not in everything
