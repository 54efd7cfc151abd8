from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from app import demo
from app.demo import DemoLLM, compose
from app.stream import Usage
from app.validation import ChatRequest


def ask(text: str, **options: int) -> ChatRequest:
    return ChatRequest(messages=({"role": "user", "content": text},), model="gpt-4o-mini", **options)  # type: ignore[arg-type]


def test_replies_are_deterministic_and_depend_on_the_message() -> None:
    robot = compose("Tell me a story about a robot")
    assert robot == compose("Tell me a story about a robot")
    assert "robot" in robot
    assert compose("Explain photosynthesis to a child") != robot
    assert "photosynthesis" in compose("Explain photosynthesis to a child")


def test_the_stream_is_word_by_word_then_usage() -> None:
    items = list(DemoLLM({"DEMO_DELAY_MS": 0}).stream(ask("Write a haiku about autumn")))
    *words, usage = items
    assert "".join(words) == compose("Write a haiku about autumn")
    assert all(" " not in word.strip() for word in words)
    assert words[0][0] != " " and all(word.startswith(" ") for word in words[1:])
    assert usage == Usage(input_tokens=5, output_tokens=len(words))


def test_max_tokens_cuts_the_reply() -> None:
    *words, usage = DemoLLM({"DEMO_DELAY_MS": 0}).stream(ask("hello there", max_tokens=3))
    assert len(words) == 3 and usage == Usage(2, 3)


def test_it_pauses_between_words(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(demo.time, "sleep", pauses.append)
    words = list(DemoLLM({"DEMO_DELAY_MS": 25}).stream(ask("pace me")))[:-1]
    assert pauses == [0.025] * (len(words) - 1)


def test_it_answers_the_newest_user_turn() -> None:
    history = (
        {"role": "user", "content": "Tell me about volcanoes"},
        {"role": "assistant", "content": "They erupt."},
        {"role": "user", "content": "And glaciers?"},
    )
    reply = "".join(
        t for t in DemoLLM({"DEMO_DELAY_MS": 0}).stream(ChatRequest(history, "m")) if isinstance(t, str)
    )
    assert reply == compose("And glaciers?")
    only_assistant = ChatRequest(({"role": "assistant", "content": "Earlier words"},), "m")
    assert demo.last_user_turn(only_assistant) == "Earlier words"


def test_a_message_of_only_stopwords_still_gets_a_reply() -> None:
    assert "this" in compose("what is it?")


def test_the_demo_is_served_with_no_key(client: FlaskClient) -> None:
    body = client.post("/api/chat", json={"message": "Tell me a story about a robot"}).get_json()
    assert body["reply"] == compose("Tell me a story about a robot")
    assert body["usage"]["output_tokens"] == len(body["reply"].split(" "))
