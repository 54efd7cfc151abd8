from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import create_app
from app.upstream.stream import ChatRequest
from app.web.validation import MAX_TOKENS, parse_chat

from ..fake_upstream import FakeUpstream

ROUTES = ["/api/chat", "/api/chat/stream"]
USER = {"role": "user", "content": "hi"}

BAD_BODIES: list[tuple[Any, str]] = [
    ([], "must be a JSON object"),
    ("hello", "must be a JSON object"),
    (42, "must be a JSON object"),
    ({}, "Give a 'message'"),
    ({"message": None}, "Give a 'message'"),
    ({"message": ""}, "'message' must not be blank"),
    ({"message": "   \n\t"}, "'message' must not be blank"),
    ({"message": 7}, "'message' must be a string"),
    ({"message": ["hi"]}, "'message' must be a string"),
    ({"message": "x" * 101}, "'message' is 101 characters long; the limit is 100"),
    ({"message": "\ud800 lone"}, "'message' contains invalid Unicode"),
    ({"messages": []}, "Give a 'message'"),
    ({"messages": "hi"}, "'messages' must be a list"),
    ({"messages": [USER] * 201}, "'messages' has 201 turns; the limit is 200"),
    ({"messages": ["hi"]}, "'messages[0]' must be an object"),
    (
        {"messages": [{"role": "bot", "content": "hi"}]},
        "'messages[0].role' must be one of user, assistant, system",
    ),
    ({"messages": [{"content": "hi"}]}, "'messages[0].role' must be one of"),
    ({"messages": [USER, {"role": "user"}]}, "'messages[1].content' must be a string"),
    ({"messages": [{"role": "user", "content": 5}]}, "'messages[0].content' must be a string"),
    ({"messages": [{"role": "user", "content": "\udfff"}]}, "'messages[0].content' contains invalid Unicode"),
    ({"message": "hi", "instructions": 3}, "'instructions' must be a string"),
    ({"message": "hi", "model": "gpt-5-ultra"}, "'model' must be one of: gpt-4o-mini, gpt-4o"),
    ({"message": "hi", "model": 4}, "'model' must be one of"),
    ({"message": "hi", "temperature": 2.5}, "'temperature' must be a number from 0 to 2"),
    ({"message": "hi", "temperature": -0.1}, "'temperature' must be a number from 0 to 2"),
    ({"message": "hi", "temperature": "hot"}, "'temperature' must be a number"),
    ({"message": "hi", "temperature": True}, "'temperature' must be a number"),
    ({"message": "hi", "max_tokens": 0}, "'max_tokens' must be a whole number from 1 to 32768"),
    ({"message": "hi", "max_tokens": 32769}, "'max_tokens' must be a whole number"),
    ({"message": "hi", "max_tokens": 10.5}, "'max_tokens' must be a whole number"),
    ({"message": "hi", "max_tokens": "10"}, "'max_tokens' must be a whole number"),
    ({"message": "hi", "max_tokens": False}, "'max_tokens' must be a whole number"),
]

RAW_BODIES: list[tuple[bytes, str, str]] = [
    (b"null", "application/json", "The request body must be a JSON object."),
    (b"{not json", "application/json", "The request body is not valid JSON."),
    (b"", "application/json", "The request body is not valid JSON."),
    (b'{"message": NaN}', "application/json", "The request body is not valid JSON."),
    (
        b'{"message": "hi", "temperature": Infinity}',
        "application/json",
        "The request body is not valid JSON.",
    ),
    (b'{"message": "\xff\xfe"}', "application/json", "The request body is not valid JSON."),
    (b"[" * 100_000 + b"]" * 100_000, "application/json", "The request body is not valid JSON."),
    (b'{"max_tokens": ' + b"9" * 5000 + b"}", "application/json", "The request body is not valid JSON."),
    (b'{"message": "hi"}', "text/plain", "Send the body as JSON with Content-Type: application/json."),
    (b"message=hi", "application/x-www-form-urlencoded", "Send the body as JSON with Content-Type"),
]


@pytest.fixture
def client_on_upstream(make_openai_app: Any) -> FlaskClient:
    app = make_openai_app(MAX_MESSAGE_CHARS="100", ALLOWED_MODELS="gpt-4o")
    return app.test_client()  # type: ignore[no-any-return]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("body", "sentence"), BAD_BODIES)
def test_bad_bodies_get_400_naming_the_field_and_nothing_goes_upstream(
    client_on_upstream: FlaskClient, upstream: FakeUpstream, route: str, body: Any, sentence: str
) -> None:
    response = client_on_upstream.post(route, json=body)
    assert response.status_code == 400
    assert response.mimetype == "application/json"
    assert sentence in response.get_json()["error"]
    assert upstream.requests == []


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("data", "mimetype", "sentence"), RAW_BODIES)
def test_bodies_that_are_not_json_get_400(
    client_on_upstream: FlaskClient,
    upstream: FakeUpstream,
    route: str,
    data: bytes,
    mimetype: str,
    sentence: str,
) -> None:
    response = client_on_upstream.post(route, data=data, content_type=mimetype)
    assert response.status_code == 400
    assert response.get_json()["error"].startswith(sentence)
    assert upstream.requests == []


@pytest.mark.parametrize("route", ROUTES)
def test_a_body_over_one_mebibyte_gets_413(
    client_on_upstream: FlaskClient, upstream: FakeUpstream, route: str
) -> None:
    body = b'{"message": "' + b"a" * (1024 * 1024) + b'"}'
    response = client_on_upstream.post(route, data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.get_json() == {"error": "The request body is larger than the 1 MiB limit."}
    assert upstream.requests == []


def test_a_body_just_under_the_limit_is_read() -> None:
    body = '{"message": "hi", "pad": "' + "a" * (1024 * 1024 - 40) + '"}'
    assert len(body) < 1024 * 1024
    from app import create_app

    response = (
        create_app({"TESTING": True, "DEMO_DELAY_MS": "0"})
        .test_client()
        .post("/api/chat", data=body, content_type="application/json")
    )
    assert response.status_code == 200


def config(**overrides: Any) -> dict[str, Any]:
    return {"MAX_MESSAGE_CHARS": 50, "OPENAI_MODEL": "m", "ALLOWED_MODELS": ("m", "n")} | overrides


def test_message_becomes_the_newest_user_turn_after_messages() -> None:
    history = [{"role": "system", "content": "s"}, USER, {"role": "assistant", "content": "hello"}]
    chat = parse_chat({"messages": history, "message": "and then?"}, config())
    assert chat.messages == (*history, {"role": "user", "content": "and then?"})


def test_options_are_kept_and_unknown_fields_ignored() -> None:
    body = {
        "message": "hi",
        "instructions": "Be terse.",
        "model": "n",
        "temperature": 1,
        "max_tokens": MAX_TOKENS,
        "stream": False,
        "extra": {"deep": [1, 2]},
    }
    assert parse_chat(body, config()) == ChatRequest(
        messages=(USER,), model="n", instructions="Be terse.", temperature=1.0, max_tokens=MAX_TOKENS
    )


def test_missing_options_take_their_defaults() -> None:
    chat = parse_chat({"message": "hi", "instructions": "  ", "temperature": None}, config())
    assert chat == ChatRequest(
        messages=(USER,), model="m", instructions=None, temperature=None, max_tokens=None
    )


def test_a_whole_float_is_a_whole_number() -> None:
    assert parse_chat({"message": "hi", "max_tokens": 64.0}, config()).max_tokens == 64


def test_a_message_at_the_limit_is_accepted() -> None:
    assert parse_chat({"message": "x" * 50}, config()).messages[-1]["content"] == "x" * 50


def test_unicode_that_is_valid_passes_through() -> None:
    text = "héllo \u200f\u202e שלום 🤖 \x00 end"
    assert parse_chat({"message": text}, config()).messages == ({"role": "user", "content": text},)


# Property-based: whatever arrives, the answer is a reply or a sentence, and a rejected body
# never reaches the model.
ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())  # surrogates too
ANY_TEXT = st.text(alphabet=ANY_CHAR, max_size=40)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=20,
)
TURNS = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "role": st.sampled_from(["user", "assistant", "system", "bot", ""]) | JSON_VALUES,
            "content": ANY_TEXT | JSON_VALUES,
        },
    ),
    max_size=4,
)
CHAT_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "message": ANY_TEXT | JSON_VALUES,
        "messages": TURNS | JSON_VALUES,
        "instructions": ANY_TEXT | JSON_VALUES,
        "model": st.sampled_from(["gpt-4o-mini", "gpt-4o", "other"]) | JSON_VALUES,
        "temperature": st.floats(allow_nan=False) | JSON_VALUES,
        "max_tokens": st.integers() | JSON_VALUES,
    },
)


class Recorder:
    """A model that answers at once and counts the calls it got."""

    def __init__(self) -> None:
        self.calls = 0

    def stream(self, chat: ChatRequest) -> Iterator[object]:
        self.calls += 1
        yield "ok"
        yield None


@pytest.fixture(scope="module")
def recorded() -> tuple[FlaskClient, Recorder]:
    app = create_app({"TESTING": True, "MAX_MESSAGE_CHARS": "100", "ALLOWED_MODELS": "gpt-4o"})
    recorder = Recorder()
    app.extensions["llm"] = recorder
    return app.test_client(), recorder


def answer_is_a_reply_or_a_sentence(client: FlaskClient, recorder: Recorder, route: str, data: bytes) -> None:
    calls = recorder.calls
    response = client.post(route, data=data, content_type="application/json")
    if response.status_code == 200:
        assert recorder.calls == calls + 1
        return
    assert response.status_code in (400, 413)
    sentence = response.get_json()["error"]
    assert isinstance(sentence, str) and sentence.endswith(".") and "Traceback" not in sentence
    assert recorder.calls == calls  # nothing was sent upstream


@pytest.mark.parametrize("route", ROUTES)
@given(body=JSON_VALUES | CHAT_BODIES)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_json_gets_a_reply_or_a_sentence(
    recorded: tuple[FlaskClient, Recorder], route: str, body: Any
) -> None:
    client, recorder = recorded
    answer_is_a_reply_or_a_sentence(client, recorder, route, json.dumps(body).encode())


@pytest.mark.parametrize("route", ROUTES)
@given(data=st.binary(max_size=200))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_bytes_get_a_reply_or_a_sentence(
    recorded: tuple[FlaskClient, Recorder], route: str, data: bytes
) -> None:
    client, recorder = recorded
    answer_is_a_reply_or_a_sentence(client, recorder, route, data)


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 50_000 + b"]" * 50_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'{"message": "hi", "max_tokens": 1' + b"0" * 400 + b"}",
        b'{"message": "hi", "temperature": 1e999}',
        json.dumps({"messages": [{"role": "user", "content": "x"}] * 5000}).encode(),
        json.dumps({"message": "\u202e\u200f\u0000 right-to-left"}).encode(),
        b'{"message": "\\ud800"}',
    ],
    ids=[
        "deep-list",
        "deep-object",
        "huge-integer",
        "huge-float",
        "5000-turns",
        "rtl-and-nul",
        "lone-surrogate",
    ],
)
@pytest.mark.parametrize("route", ROUTES)
def test_hostile_bodies(recorded: tuple[FlaskClient, Recorder], route: str, data: bytes) -> None:
    client, recorder = recorded
    answer_is_a_reply_or_a_sentence(client, recorder, route, data)
