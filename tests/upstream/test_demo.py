from __future__ import annotations

import itertools
import re

import pytest
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from app.upstream import demo, demo_text
from app.upstream.demo import DemoLLM, compose, pieces
from app.upstream.stream import ChatRequest, Usage

FENCE = re.compile(r"```python\n(.*?)```", re.S)


def ask(text: str, **options: int) -> ChatRequest:
    return ChatRequest(messages=({"role": "user", "content": text},), model="gpt-4o-mini", **options)  # type: ignore[arg-type]


def test_replies_are_deterministic_and_depend_on_the_message() -> None:
    asks = [
        "Tell me a story about a robot",
        "Explain photosynthesis to a child",
        "What is the history of lighthouses?",
        "How do I sleep better?",
        "Tell me about the planets",
    ]
    replies = [compose(message) for message in asks]
    assert replies == [compose(message) for message in asks]
    assert len(set(replies)) == len(asks)
    assert "software" in compose("Tell me a story about a robot")  # what it is about, in its own words
    assert "nature" in compose("Explain photosynthesis to a child")


def test_the_stream_is_word_by_word_then_usage() -> None:
    items = list(DemoLLM({"DEMO_DELAY_MS": 0}).stream(ask("Write a haiku about autumn")))
    *words, usage = items
    assert "".join(words) == compose("Write a haiku about autumn")
    assert all(piece.strip() != "" and len(piece.split()) == 1 for piece in words)
    assert not words[0][0].isspace() and all(word[0].isspace() for word in words[1:])
    assert usage == Usage(input_tokens=5, output_tokens=len(words))


def test_max_tokens_cuts_the_reply() -> None:
    *words, usage = DemoLLM({"DEMO_DELAY_MS": 0}).stream(ask("hello there", max_tokens=3))
    assert words == pieces(compose("hello there"))[:3] and usage == Usage(2, 3)


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


@pytest.mark.parametrize(
    ("message", "name", "call", "expected"),
    [
        ("Write a python function that reverses a string", "reverse_text", ("stressed",), "desserts"),
        ("Code to check for a palindrome", "is_palindrome", ("A man, a plan, a canal: Panama",), True),
        ("Write a Fibonacci function in Python", "fibonacci", (7,), [0, 1, 1, 2, 3, 5, 8]),
        ("Write a function that tests if a number is prime", "is_prime", (97,), True),
        ("python factorial please", "factorial", (5,), 120),
        (
            "Write code to sort words",
            "sort_by_length",
            (["pear", "fig", "apple", "kiwi"],),
            ["fig", "kiwi", "pear", "apple"],
        ),
        ("A function to count vowels", "count_vowels", ("Education",), 5),
        ("Write a script for celsius", "celsius_to_fahrenheit", (100,), 212),
        (
            "Write me some code",
            "word_counts",
            ("The cat and the hat",),
            {"the": 2, "cat": 1, "and": 1, "hat": 1},
        ),
    ],
)
def test_asked_for_code_it_writes_a_small_correct_python_function(
    message: str, name: str, call: tuple[object, ...], expected: object
) -> None:
    reply = compose(message)
    [code] = FENCE.findall(reply)
    namespace: dict[str, object] = {}
    exec(code, namespace)
    function = namespace[name]
    assert callable(function) and function(*call) == expected
    assert reply.startswith("Here is a small Python function that ")
    assert "\n- " in reply  # a short list of how it works


def test_asked_for_a_poem_or_a_list_it_answers_in_the_right_shape() -> None:
    poem = compose("Write a haiku about autumn")
    verses = [block for block in poem.split("\n\n") if block.count("\n") == 2]
    assert len(verses) == 1 and verses[0] in demo_text.POEMS
    tips = compose("Give me tips for learning Spanish")
    assert re.search(r"\n\n1\. .+\n2\. .+\n3\. .+\n4\. .+\n\n", tips)


# The sentences the old demo model wrote, a prompt word dropped into a slot (from the bug report).
BROKEN = ("the happened", "the another", "The haiku and the haiku", "Good question — the")
WORDS = [word for subject in demo_text.SUBJECTS for word in subject.keywords] + [
    "write", "python", "function", "haiku", "list", "tips", "hello", "what", "happened", "another",
    "explain", "code", "poem", "and", "the", "a",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(st.sampled_from(WORDS), st.from_regex(r"zq[a-z]{3,8}", fullmatch=True)),
        min_size=1,
        max_size=12,
    )
)
def test_no_reply_puts_a_prompt_word_in_a_sentence_or_doubles_a_word(message_words: list[str]) -> None:
    message = " ".join(message_words)
    reply = compose(message)
    assert reply == compose(message)
    # Words the demo model does not know (zq...) never reach the reply: it fills no slot with them.
    assert not any(word in reply for word in message_words if word.startswith("zq"))
    words = re.findall(r"[A-Za-z']+", reply.lower())
    assert not any(a == b for a, b in itertools.pairwise(words)), reply
    assert not any(phrase in reply for phrase in BROKEN)


@pytest.mark.parametrize("message", ["What happened?", "And another one", "Write a haiku", "haiku haiku"])
def test_the_messages_that_broke_the_old_demo_model_get_whole_sentences(message: str) -> None:
    reply = compose(message)
    assert not any(phrase in reply for phrase in BROKEN)
    verses = {line for poem in demo_text.POEMS for line in poem.split("\n")}
    sentences = [
        line
        for line in reply.split("\n")
        if line and line not in verses and not line.startswith(("-", "1.", "```"))
    ]
    assert all(line[0].isupper() or line[0] in "_`" for line in sentences), reply


def test_the_demo_is_served_with_no_key(client: FlaskClient) -> None:
    body = client.post("/api/chat", json={"message": "Tell me a story about a robot"}).get_json()
    assert body["reply"] == compose("Tell me a story about a robot")
    assert body["usage"]["output_tokens"] == len(pieces(body["reply"]))
