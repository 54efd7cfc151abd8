"""No key or token ever leaves the service: not in a response, a header or a log line."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

import pytest
from flask import Flask

from .conftest import SECRET_KEY
from .fake_upstream import FakeUpstream
from .test_faults import FAULTS, FRAMINGS, fault_client

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
    for fault in FAULTS:
        if fault.script is not None:  # every upstream here quotes the key back in its error
            fault = replace(
                fault, script=replace(fault.script, error_message=f"Incorrect API key: {SECRET_KEY}")
            )
        client = fault_client(
            make_openai_app, upstream, fault, OPENAI_API=api, API_KEYS=f"{CLIENT_KEY},other"
        )
        route, accept = FRAMINGS[framing]
        for key in (CLIENT_KEY, WRONG_KEY):
            headers = {"Authorization": f"Bearer {key}", **accept}
            response = client.post(
                route, json={"message": f"hello {fault.name}"}, headers=headers, buffered=True
            )
            seen.append(response.get_data(as_text=True))
            seen.extend(f"{k}: {v}" for k, v in response.headers.items())
    seen.extend(f"{r.name} {r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert len([r for r in caplog.records if r.name == "app.access"]) == 2 * len(FAULTS)
    everything = "\n".join(seen)
    for sentinel in SENTINELS:
        assert sentinel not in everything
