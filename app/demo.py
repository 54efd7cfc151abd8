"""The offline demo model: deterministic replies that depend on the message, word by word."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Generator, Mapping
from typing import Any

from .stream import Delta, Usage
from .validation import ChatRequest

STOPWORDS = frozenset(
    "a an and are about as at be but by can could do for from give how i in is it me my of on or "
    "please show so tell that the this to was we what when where which who why will with would "
    "write you your explain describe summarize summarise list make create compose draft generate".split()
)
OPENINGS = (
    "Here is a short answer about {topic}.",
    "Let me think about {topic} for a moment.",
    "Good question — {topic} is worth a careful look.",
    "Once upon a time, there was {topic}.",
)
MIDDLES = (
    "The first thing to notice is how the {a} shapes everything around it.",
    "Many people start with the {a}, then find that the {b} matters just as much.",
    "Seen up close, the {a} and the {b} turn out to be two sides of one idea.",
    "A small example helps: picture the {a} on a quiet morning, waiting for the {b}.",
    "The history of the {a} is longer than most guesses, and the {b} is part of it.",
    "Nobody expected the {a} to change, yet the {b} changed it step by step.",
)
CLOSINGS = (
    "That is the heart of it, in a few words.",
    "I hope this helps — ask again for more detail.",
    "And that, more or less, is the whole story.",
    "(This reply comes from the built-in demo model; set OPENAI_API_KEY for a real one.)",
)


class DemoLLM:
    """Writes a reply from the last user turn, pausing DEMO_DELAY_MS between words."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.delay = config["DEMO_DELAY_MS"] / 1000.0

    def stream(self, chat: ChatRequest) -> Generator[Delta]:  # a generator is a Source
        """Yield the reply a word at a time (each with its leading space), then its Usage."""
        prompt = " ".join(turn["content"] for turn in chat.messages)
        words = compose(last_user_turn(chat)).split(" ")
        if chat.max_tokens is not None:
            words = words[: chat.max_tokens]
        for index, word in enumerate(words):
            if index and self.delay:
                time.sleep(self.delay)
            yield word if index == 0 else " " + word
        yield Usage(input_tokens=len(prompt.split()), output_tokens=len(words))

    def close(self) -> None:
        """Nothing to release."""


def last_user_turn(chat: ChatRequest) -> str:
    """The newest user turn's text (the last turn of any role if there is none)."""
    for turn in reversed(chat.messages):
        if turn["role"] == "user":
            return turn["content"]
    return chat.messages[-1]["content"]


def compose(message: str) -> str:
    """A reply of four to six sentences built from the message's own words."""
    seed = hashlib.sha256(message.encode("utf-8", "replace")).digest()
    words = [w for w in re.findall(r"[^\W\d_][\w'-]*", message.lower()) if w not in STOPWORDS]
    topics = sorted(dict.fromkeys(words), key=lambda w: (-len(w), w))[:3] or ["this"]
    a, b = topics[0], topics[min(1, len(topics) - 1)]
    opening = OPENINGS[seed[0] % len(OPENINGS)].format(topic=phrase(topics[0], seed[1]))
    count = 2 + seed[2] % 3
    middles = [MIDDLES[(seed[3] + step) % len(MIDDLES)].format(a=a, b=b) for step in range(count)]
    closing = CLOSINGS[seed[4] % len(CLOSINGS)]
    return " ".join([opening, *middles, closing])


def phrase(word: str, pick: int) -> str:
    """The topic word with an article, so the sentences read naturally."""
    article = "an" if word[0] in "aeiou" else "a"
    return f"{article} {word}" if pick % 2 else f"the {word}"
