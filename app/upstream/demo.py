"""The offline demo model: a plain, grammatical answer about the message, the same each time.

It reads what kind of answer the message asks for (code, a poem, a list, a greeting, or an
explanation) and what it is about (one of a few subjects), and answers from text written for
that: no word of the message is put into a sentence, so no reply reads "the happened is worth
a look". Markdown where a model would use it: a short list, a fenced code block for code.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Generator, Mapping, Sequence
from typing import Any

from .demo_text import CLOSING, CODE, GREETINGS, POEM_CLOSING, POEMS, SUBJECTS, Subject
from .stream import ChatRequest, Delta, Usage

PIECE = re.compile(r"\s*\S+")  # a word with the white space before it: what one delta carries
WORD = re.compile(r"[^\W\d_]+")
ASKS = {
    "code": {"code", "function", "python", "script", "program", "snippet", "implement", "algorithm", "regex"},
    "poem": {"poem", "haiku", "verse", "rhyme", "limerick", "sonnet", "poetry"},
    "list": {"list", "ideas", "tips", "steps", "ways", "suggest", "suggestions", "checklist", "recommend"},
    "greeting": {"hi", "hello", "hey", "thanks", "thank", "morning", "evening", "greetings"},
}


class DemoLLM:
    """Writes a reply to the last user turn, pausing DEMO_DELAY_MS between words."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.delay = config["DEMO_DELAY_MS"] / 1000.0

    def stream(self, chat: ChatRequest) -> Generator[Delta]:  # a generator is a Source
        """Yield the reply a word at a time (each with the white space before it), then its Usage."""
        prompt = " ".join(turn["content"] for turn in chat.messages)
        words = pieces(compose(last_user_turn(chat)))
        if chat.max_tokens is not None:
            words = words[: chat.max_tokens]
        for index, word in enumerate(words):
            if index and self.delay:
                time.sleep(self.delay)
            yield word
        yield Usage(input_tokens=len(prompt.split()), output_tokens=len(words))

    def close(self) -> None:
        """Nothing to release."""


def last_user_turn(chat: ChatRequest) -> str:
    """The newest user turn's text (the last turn of any role if there is none)."""
    for turn in reversed(chat.messages):
        if turn["role"] == "user":
            return turn["content"]
    return chat.messages[-1]["content"]


def pieces(text: str) -> list[str]:
    """``text`` as the deltas the demo model sends: each word with the white space before it."""
    return PIECE.findall(text)


def compose(message: str) -> str:
    """The demo model's whole reply to ``message``."""
    words = {word.lower() for word in WORD.findall(message)}
    seed = hashlib.sha256(message.encode("utf-8", "replace")).digest()
    subject = subject_of(words)
    if words & ASKS["code"]:
        return code_reply(words, seed)
    if words & ASKS["poem"]:
        poem = pick(POEMS, seed[0])
        return f"{pick(subject.poem_intros, seed[1])}\n\n{poem}\n\n{pick(POEM_CLOSING, seed[2])}"
    if words & ASKS["list"]:
        items = "\n".join(f"{n}. {item}" for n, item in enumerate(rotated(subject.tips, seed[1])[:4], 1))
        return f"{pick(subject.list_intros, seed[0])}\n\n{items}\n\n{pick(CLOSING, seed[2])}"
    if words & ASKS["greeting"] and len(words) <= 6:
        return f"{pick(GREETINGS, seed[0])} {pick(subject.offers, seed[1])}"
    points = "\n".join(f"- {point}" for point in rotated(subject.points, seed[2])[:3])
    return (
        f"{pick(subject.openings, seed[0])} {pick(subject.middles, seed[1])}\n\n"
        f"A few things to keep in mind:\n\n{points}\n\n{pick(CLOSING, seed[3])}"
    )


def subject_of(words: set[str]) -> Subject:
    """The subject the message is most about (the general one when it names none)."""
    best = max(SUBJECTS, key=lambda subject: len(words & subject.keywords))
    return best if words & best.keywords else SUBJECTS[-1]


def code_reply(words: set[str], seed: bytes) -> str:
    """A small, correct Python function, the one the message asks for if the demo knows it."""
    task = next((task for task in CODE if task.asked(words)), CODE[-1])
    notes = "\n".join(f"- {note}" for note in task.notes)
    return (
        f"Here is a small Python function that {task.does}:\n\n```python{task.code}```\n\n"
        f"How it works:\n\n{notes}\n\n{pick(CLOSING, seed[0])}"
    )


def pick(choices: Sequence[str], byte: int) -> str:
    return choices[byte % len(choices)]


def rotated(items: Sequence[str], byte: int) -> list[str]:
    start = byte % len(items)
    return [*items[start:], *items[:start]]
