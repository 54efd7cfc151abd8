"""OpenAI's wire events -> deltas and usage: Chat Completions' ``chat.completion.chunk`` events
and the Responses API's typed events, with the errors a stream can carry mapped to ours.

The readers take the data of the events each network read completed (``sse.batches``) and
join the deltas of one batch into one piece of text, so they go out in one write: nothing
waits to be batched, and nothing already in hand waits either.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Generator, Iterable, Iterator, Mapping
from typing import Any

import orjson

from ..errors import UpstreamError
from .stream import Reasoning, Usage

# Where servers say how long to wait: milliseconds, seconds, and LiteLLM's renamed header.
RETRY_HEADERS = (("retry-after-ms", 1000.0), ("retry-after", 1.0), ("llm_provider-retry-after", 1.0))
RETRY_IN_MESSAGE = re.compile(r"try again in (\d+(?:\.\d+)?) ?(ms|s)\b", re.IGNORECASE)
FIELDS = ("code", "type", "message")  # of an error object
RATE_LIMIT_CODES = frozenset(("rate_limit_exceeded", "rate_limit_error", "insufficient_quota_per_minute"))
TOO_LONG_CODES = frozenset(("context_length_exceeded", "string_above_max_length"))
# Servers and gateways without that code (vLLM, LiteLLM's ContextWindowExceededError) say it so.
TOO_LONG_MESSAGE = re.compile(r"maximum context length|context ?window ?exceeded", re.IGNORECASE)


def read_chat(batches: Iterable[list[bytes]]) -> Generator[str, None, Usage | None]:
    """Text (and Reasoning) from ``chat.completion.chunk`` events up to ``[DONE]``; returns the usage."""
    usage = None
    finished = False
    for batch in batches:
        texts: list[str] = []
        for data in batch:
            if data == b"[DONE]":
                yield from joined(texts)
                return usage
            event = decode(data)
            if event.get("error"):
                yield from joined(texts)
                raise in_band_error(event["error"])
            try:
                for choice in event.get("choices") or ():
                    delta = choice.get("delta") or {}
                    # vLLM, DeepSeek and most gateways call it reasoning_content; Ollama reasoning.
                    # A shape we do not know is left out: the answer does not depend on it.
                    thought = delta.get("reasoning_content") or delta.get("reasoning")
                    if thought and type(thought) is str:
                        texts.append(Reasoning(thought))
                    text = delta.get("content")
                    if text:
                        if type(text) is not str:
                            raise TypeError
                        texts.append(text)
                    finished = finished or bool(choice.get("finish_reason"))
            except (AttributeError, TypeError):
                raise malformed() from None
            if event.get("usage"):
                usage = read_usage(event["usage"], "prompt_tokens", "completion_tokens")
        if texts:
            yield from joined(texts)
    if not finished:
        raise cut_short()
    return usage


# The Responses API's reasoning: the summary OpenAI sends, the raw text other servers (vLLM) send.
REASONING_EVENTS = frozenset(("response.reasoning_summary_text.delta", "response.reasoning_text.delta"))


def read_responses(batches: Iterable[list[bytes]]) -> Generator[str, None, Usage | None]:
    """Text (and Reasoning) from the Responses API's typed events up to ``response.completed``."""
    for batch in batches:
        texts: list[str] = []
        for data in batch:
            event = decode(data)
            kind = event.get("type")
            if kind == "response.output_text.delta" or (type(kind) is str and kind in REASONING_EVENTS):
                text = event.get("delta")
                if text:
                    if type(text) is not str:
                        raise malformed()
                    texts.append(text if kind == "response.output_text.delta" else Reasoning(text))
                continue
            if texts:
                yield from joined(texts)
                texts = []
            if kind in ("response.completed", "response.incomplete"):
                response = event.get("response")
                usage = response.get("usage") if isinstance(response, dict) else None
                return read_usage(usage, "input_tokens", "output_tokens") if usage else None
            if kind == "response.failed":
                response = event.get("response")
                raise in_band_error(response.get("error") if isinstance(response, dict) else None)
            if kind == "error":
                nested = event.get("error")  # some servers nest it, as Chat Completions does
                raise in_band_error(nested if isinstance(nested, dict) else event)
        if texts:
            yield from joined(texts)
    raise cut_short()


def joined(pieces: list[str]) -> Iterator[str]:
    """Runs of answer text and of Reasoning, each joined into one piece, in their order."""
    if len(pieces) == 1:
        yield pieces[0]  # the usual batch: one delta
        return
    for kind, run in itertools.groupby(pieces, type):
        text = "".join(run)
        yield Reasoning(text) if kind is Reasoning else text


def cut_short() -> UpstreamError:
    return UpstreamError("The model's stream ended before the reply was complete.", reason="upstream_cut")


def malformed() -> UpstreamError:
    return UpstreamError("The model sent an event that could not be read.", reason="upstream_malformed")


def decode(data: bytes) -> dict[str, Any]:
    """One event's JSON object, or an UpstreamError for anything else."""
    try:
        event = orjson.loads(data)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        raise malformed()
    return event


def read_usage(usage: Any, input_key: str, output_key: str) -> Usage | None:
    """A Usage from the server's counts, or None when they are not numbers."""
    if not isinstance(usage, dict):
        return None
    given, made = usage.get(input_key), usage.get(output_key)
    if type(given) is not int or type(made) is not int or given < 0 or made < 0:
        return None
    return Usage(given, made)


def in_band_error(error: Any) -> UpstreamError:
    """An UpstreamError for an error event inside the stream; its text is not passed on.

    Before any text, its status is what the same error sent as an HTTP status gets.
    """
    fields = error if isinstance(error, dict) else {}
    # Only strings count: anything else from a server is no code of ours (and may be unhashable).
    code, kind, message = (value if isinstance(value, str) else None for value in map(fields.get, FIELDS))
    if code in RATE_LIMIT_CODES or kind == "rate_limit_error":
        return rate_limited(retry_after({}, message))
    if too_long_for_the_model(code, message):
        return too_long()
    suffix = f" ({code})" if code and len(code) <= 64 and code.replace("_", "").isalnum() else ""
    return UpstreamError(f"The model reported an error{suffix}.", reason="upstream_error_event")


def rate_limited(seconds: int) -> UpstreamError:
    return UpstreamError(
        f"The model service is rate limiting requests; retry in {seconds} s.",
        reason="upstream_rate_limited",
        status=429,
        headers={"Retry-After": str(seconds)},
    )


def too_long_for_the_model(code: Any, message: Any) -> bool:
    """Whether an error says the conversation does not fit the model's context window."""
    too_long_code = isinstance(code, str) and code in TOO_LONG_CODES
    return too_long_code or (isinstance(message, str) and bool(TOO_LONG_MESSAGE.search(message)))


def too_long() -> UpstreamError:
    return UpstreamError(
        "The conversation is too long for the model: shorten it (fewer or shorter messages) "
        "or start a new one.",
        reason="upstream_context_length",
        status=400,
    )


def retry_after(headers: Mapping[str, str], message: Any = None) -> int:
    """Whole seconds to wait, from the headers or a "try again in 20s" in the message (at least 1)."""
    for name, scale in RETRY_HEADERS:
        try:
            seconds = float(headers.get(name, "")) / scale
        except ValueError:
            continue
        if math.isfinite(seconds):
            return max(1, math.ceil(seconds))
    found = RETRY_IN_MESSAGE.search(message) if isinstance(message, str) else None
    if found:
        seconds = float(found[1]) / (1000.0 if found[2].lower() == "ms" else 1.0)
        return max(1, math.ceil(seconds))
    return 1
