"""LiteLLM custom models for the compatibility check (imported by the LiteLLM proxy, not the tests).

The model's name says what it does: ``paced`` answers at once, ``think-3`` is silent for 3 s
before its first token, ``open-then-think-20`` sends one word and then is silent (LiteLLM holds
its response headers until the first token and drops empty chunks, so a word it must be),
``rate-limited`` and ``too-long`` fail before any text.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import litellm
from litellm import CustomLLM
from litellm.types.utils import GenericStreamingChunk, ModelResponse

WORDS = ["Hello", " from", " a", " paced", " model", "."]


def chunk(text: str, finished: bool = False) -> GenericStreamingChunk:
    usage = {"prompt_tokens": 9, "completion_tokens": len(WORDS), "total_tokens": 9 + len(WORDS)}
    return {
        "text": text,
        "tool_use": None,
        "is_finished": finished,
        "finish_reason": "stop" if finished else "",
        "usage": usage if finished else None,  # type: ignore[typeddict-item]
        "index": 0,
    }


def fail(model: str) -> None:
    if model == "rate-limited":
        raise litellm.RateLimitError(
            "Rate limit reached for requests. Please try again in 7s.", llm_provider="compat", model=model
        )
    if model == "too-long":
        raise litellm.ContextWindowExceededError(
            "This model's maximum context length is 8 tokens.", llm_provider="compat", model=model
        )


class Paced(CustomLLM):
    """One word every 50 ms, after whatever silence the model's name asks for."""

    def completion(self, *args: Any, **kwargs: Any) -> ModelResponse:
        model = kwargs["model"].split("/")[-1]
        fail(model)
        return litellm.completion(
            model="gpt-4o-mini", messages=kwargs["messages"], mock_response="".join(WORDS)
        )

    async def acompletion(self, *args: Any, **kwargs: Any) -> ModelResponse:
        return self.completion(*args, **kwargs)

    def streaming(self, *args: Any, **kwargs: Any) -> Iterator[GenericStreamingChunk]:
        raise NotImplementedError("the proxy streams through astreaming")

    async def astreaming(self, *args: Any, **kwargs: Any) -> AsyncIterator[GenericStreamingChunk]:
        model = kwargs["model"].split("/")[-1]
        fail(model)
        if model.startswith("open-then-"):
            yield chunk("Hmm.")
        found = re.search(r"think-(\d+)", model)
        if found:
            await asyncio.sleep(int(found[1]))
        for word in WORDS:
            yield chunk(word)
            await asyncio.sleep(0.05)
        yield chunk("", finished=True)


paced = Paced()
