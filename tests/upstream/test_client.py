"""The SDK client's request templates: each request is the one the SDK itself would build."""

from __future__ import annotations

import httpx2
import openai
import pytest

from app.upstream.client import OpenAI
from app.upstream.llm import REQUESTS

SETTINGS = {
    "api_key": "sk-test",
    "base_url": "http://127.0.0.1:9/v1",
    "timeout": httpx2.Timeout(60, connect=60),
    "max_retries": 0,
}


def sdk_request(options, retries_taken=0):
    """What the SDK's own client builds for ``options``."""
    return openai.OpenAI(**SETTINGS)._build_request(options, retries_taken=retries_taken)


def same(ours, theirs):
    assert ours.headers.raw == theirs.headers.raw
    assert (ours.method, str(ours.url), ours.content, ours.extensions) == (
        theirs.method,
        str(theirs.url),
        theirs.content,
        theirs.extensions,
    )


@pytest.mark.parametrize("path", list(REQUESTS))
@pytest.mark.parametrize("retries_taken", [0, 1])
def test_a_request_is_what_the_sdk_builds(path, retries_taken):
    client = OpenAI(**SETTINGS)
    for text in ("hi", "a longer message, é and 漢字"):  # the second one comes from the template
        body = {"model": "m", "messages": [{"role": "user", "content": text}], "stream": True}
        options = REQUESTS[path].model_copy(update={"json_data": body})
        same(client._build_request(options, retries_taken=retries_taken), sdk_request(options, retries_taken))
    assert client.user_agent == openai.OpenAI(**SETTINGS).user_agent


def test_one_template_per_path_retry_count_and_headers():
    client = OpenAI(**SETTINGS)
    body = {"model": "m", "input": "hi", "stream": True}
    for path in REQUESTS:
        for retries_taken in (0, 1, 0):
            client._build_request(
                REQUESTS[path].model_copy(update={"json_data": body}), retries_taken=retries_taken
            )
    assert sorted((path, retries) for path, retries, _ in client._templates) == [
        ("/chat/completions", 0),
        ("/chat/completions", 1),
        ("/responses", 0),
        ("/responses", 1),
    ]


@pytest.mark.parametrize(
    "change",
    [
        {"extra_json": {"user": "u1"}},
        {"params": {"api-version": "1"}},
        {"json_data": [1, 2]},
        {"method": "get", "json_data": None},
    ],
)
def test_other_shapes_are_built_by_the_sdk(change):
    client = OpenAI(**SETTINGS)
    options = REQUESTS["/responses"].model_copy(update={"json_data": {"model": "m"}, **change})
    same(client._build_request(options), sdk_request(options))
    assert client._templates == {}


def test_a_per_request_timeout_or_idempotency_key_is_built_by_the_sdk():
    client = OpenAI(**SETTINGS)
    client._idempotency_header = "Idempotency-Key"
    sent = []
    for n in range(2):
        options = REQUESTS["/responses"].model_copy(
            update={"json_data": {"model": "m"}, "idempotency_key": f"key-{n}"}
        )
        sent.append(client._build_request(options).headers["Idempotency-Key"])
    assert sent == ["key-0", "key-1"]
    client._idempotency_header = None
    options = REQUESTS["/responses"].model_copy(update={"json_data": {"model": "m"}, "timeout": 5.0})
    assert client._build_request(options).extensions["timeout"]["read"] == 5.0
    assert client._templates == {}


def test_a_key_that_can_change_is_read_for_every_request():
    keys = iter(["sk-one", "sk-two"])
    client = OpenAI(**{**SETTINGS, "api_key": lambda: next(keys)})
    seen = []
    for _ in range(2):
        options = client._prepare_options(
            REQUESTS["/responses"].model_copy(update={"json_data": {"model": "m"}})
        )
        seen.append(client._build_request(options).headers["Authorization"])
    assert seen == ["Bearer sk-one", "Bearer sk-two"]
    assert client._templates == {}
