"""The OpenAI (or OpenAI-compatible) model behind the official SDK.

``stream(chat)`` yields the reply's text as it arrives, then one Usage (or None). The SDK
builds, authenticates and sends the request, retries before any byte arrives, and maps
HTTP errors to its typed exceptions; the body is taken raw (the SDK's documented low-level
``post`` with ``cast_to=httpx2.Response``) and its events decoded here with orjson, which
costs a small fraction of building the SDK's typed parameter and chunk objects. The deltas
that one network read completes are joined into one piece of text, so they go out in one
write: nothing waits to be batched, and nothing already in hand waits either.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
import socket
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
import openai
import orjson
from openai._models import FinalRequestOptions

from . import connections, transport
from .errors import UpstreamError, UpstreamTimeout
from .validation import ChatRequest

OPENAI_URL = "https://api.openai.com/v1"
PLACEHOLDER_KEY = "not-needed"  # keyless local servers (Ollama, vLLM) still get a bearer header
# Direct connections go through transport.Transport, whose pool checks only the connection it
# takes: one pool, keeping as many idle connections as may be open. (Proxied ones keep
# httpcore2's pool, which probes every idle connection at each request's start and end.)
POOL_SHARDS = 1
IDLE_PER_POOL = 8  # the proxies' pools
MAX_EVENT_BYTES = 1 << 20  # one server-sent event; OpenAI's are a few hundred bytes
# Raw bytes are the body only when nothing compresses it; SSE is not worth compressing anyway.
STREAM: Any = {"headers": {"Accept": "text/event-stream", "Accept-Encoding": "identity"}}
# The SDK's description of a request, as its ``post`` builds it: constructing this pydantic
# model deep-copies its field defaults each time, 7% of a stream's opening (measured), so
# each path's is built once and copied (the SDK copies it again before any use).
REQUESTS = {
    path: FinalRequestOptions.construct(method="post", url=path, **STREAM)
    for path in ("/chat/completions", "/responses")
}
# Where servers say how long to wait: milliseconds, seconds, and LiteLLM's renamed header.
RETRY_HEADERS = (("retry-after-ms", 1000.0), ("retry-after", 1.0), ("llm_provider-retry-after", 1.0))
RETRY_IN_MESSAGE = re.compile(r"try again in (\d+(?:\.\d+)?) ?(ms|s)\b", re.IGNORECASE)
RATE_LIMIT_CODES = frozenset(("rate_limit_exceeded", "rate_limit_error", "insufficient_quota_per_minute"))
TOO_LONG_CODES = frozenset(("context_length_exceeded", "string_above_max_length"))
# Servers and gateways without that code (vLLM, LiteLLM's ContextWindowExceededError) say it so.
TOO_LONG_MESSAGE = re.compile(r"maximum context length|context ?window ?exceeded", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts the model reported for one reply."""

    input_tokens: int
    output_tokens: int

    def as_dict(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}


class Reasoning(str):
    """A piece of the model's reasoning text, sent apart from the answer (SSE only)."""

    __slots__ = ()


# The relay tells them apart with ``type(item) is str``, cheap on the hot path.
Delta = str | Reasoning | Usage | None


class Reply:
    """One reply in flight: iterate it for deltas; ``cancel()`` hangs up from any greenlet or thread."""

    deltas: Generator[Delta]

    def __init__(self) -> None:
        self.sock: socket.socket | None = None  # the upstream connection, while the body is open
        self.complete = False  # the model's end of stream arrived
        self.cancelled = False

    def __iter__(self) -> Generator[Delta]:
        return self.deltas

    def close(self) -> None:
        """Close the body and release the connection (from the greenlet that reads it)."""
        self.deltas.close()

    def hold(self, sock: socket.socket | None) -> None:
        """Take hold of the connection the request goes out on (see ``connections``)."""
        self.sock = sock
        if self.cancelled:
            self.cancel()

    def cancel(self) -> None:
        """Shut the upstream connection down now, even while another greenlet waits on it.

        The waiting read sees the end of the stream and unwinds as usual; a shutdown is
        one system call, safe where closing the SDK's response from outside is not. The
        connection is known from the moment the request is written to it, so this works
        before the response headers too; while it is still being made (the TCP or TLS
        handshake), the reply hangs up as soon as it is made, before sending anything.
        """
        self.cancelled = True
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class OpenAILLM:
    """Streams replies from the Chat Completions or the Responses API."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        timeout = config["UPSTREAM_TIMEOUT_S"]
        self.api = config["OPENAI_API"]
        self.stream_usage = config["OPENAI_STREAM_USAGE"]
        limit = max(1, -(-config["UPSTREAM_MAX_CONNECTIONS"] // POOL_SHARDS))
        limits = httpx2.Limits(max_connections=limit, max_keepalive_connections=min(limit, IDLE_PER_POOL))
        tls = httpx2.create_ssl_context()  # one for all pools: building one reads the CA bundle
        direct = transport.Transport(
            tls, config["UPSTREAM_MAX_CONNECTIONS"], max_idle=config["UPSTREAM_MAX_CONNECTIONS"]
        )
        self.clients = [
            openai.OpenAI(
                api_key=config["OPENAI_API_KEY"] or PLACEHOLDER_KEY,
                base_url=config["OPENAI_BASE_URL"] or OPENAI_URL,
                # The read timeout bounds the silence between two chunks, not the whole reply.
                timeout=httpx2.Timeout(timeout, connect=timeout),
                max_retries=config["OPENAI_MAX_RETRIES"],
                http_client=transport.client_transport(
                    connections.track(openai.DefaultHttpxClient(limits=limits, verify=tls)), direct
                ),
            )
            for _ in range(POOL_SHARDS)
        ]
        self.client = self.clients[0]
        self._turn = itertools.count()
        # The SDK builds its platform headers on first use, and that runs `uname` in a
        # subprocess: cached only once done, so a burst of first requests would each fork.
        _ = self.client.default_headers

    def stream(self, chat: ChatRequest) -> Reply:
        """Start a reply: iterate it for text deltas, then the Usage (None when the server sent none)."""
        reply = Reply()
        reply.deltas = self._deltas(chat, reply)
        return reply

    def _deltas(self, chat: ChatRequest, reply: Reply) -> Generator[Delta]:
        if self.api == "responses":
            path, body, parse = "/responses", responses_params(chat), parse_responses
        else:
            path, body, parse = "/chat/completions", chat_params(chat, self.stream_usage), parse_chat
        try:
            client = self.clients[next(self._turn) % len(self.clients)]
            with connections.sending(reply):
                options = REQUESTS[path].model_copy(update={"json_data": body})
                response = client.request(httpx2.Response, options, stream=True)
            reads = response.iter_raw()
            try:
                if reply.cancelled:
                    reply.cancel()
                    raise UpstreamError("The client left before the model answered.", reason="client_gone")
                usage = yield from parse(sse_batches(reads))
                reply.complete = True
                yield usage  # the last item: the consumer closes us once it is sent on
            finally:
                reply.sock = None
                if reply.complete:
                    drain(reads)
                response.close()
        except openai.APIError as error:
            raise from_sdk_error(error, chat.model) from None
        except httpx2.TimeoutException:
            raise UpstreamTimeout(
                "The model stopped sending for longer than the upstream timeout.", reason="upstream_timeout"
            ) from None
        except httpx2.HTTPError:
            raise UpstreamError("The connection to the model broke.", reason="upstream_broken") from None

    def close(self) -> None:
        """Release the connection pools."""
        for client in self.clients:
            client.close()


def chat_params(chat: ChatRequest, stream_usage: bool) -> dict[str, Any]:
    """Chat Completions arguments: instructions become the first system message."""
    messages = list(chat.messages)
    if chat.instructions:
        messages.insert(0, {"role": "system", "content": chat.instructions})
    params: dict[str, Any] = {"model": chat.model, "messages": messages, "stream": True}
    if stream_usage:
        params["stream_options"] = {"include_usage": True}
    if chat.temperature is not None:
        params["temperature"] = chat.temperature
    if chat.max_tokens is not None:
        params["max_tokens"] = chat.max_tokens
    return params


def responses_params(chat: ChatRequest) -> dict[str, Any]:
    """Responses API arguments: turns go in ``input``, the instruction in ``instructions``."""
    params: dict[str, Any] = {"model": chat.model, "input": list(chat.messages), "stream": True}
    if chat.instructions:
        params["instructions"] = chat.instructions
    if chat.temperature is not None:
        params["temperature"] = chat.temperature
    if chat.max_tokens is not None:
        params["max_output_tokens"] = chat.max_tokens
    return params


def drain(reads: Iterator[bytes]) -> None:
    """Read what is left of a finished reply (the end of its chunked body), so the connection
    goes back to the pool instead of being closed: a new one costs a TCP and TLS handshake."""
    with contextlib.suppress(httpx2.HTTPError):
        for _ in reads:
            pass


def sse_batches(reads: Iterable[bytes]) -> Iterator[list[bytes]]:
    """For each network read, the data of the server-sent events it completed (often one).

    Only the new bytes are searched for the end of an event, and one event may not grow
    past MAX_EVENT_BYTES: an endless line costs neither quadratic time nor unbounded memory.
    """
    parts: list[bytes] = []  # the unfinished event
    size = 0
    for read in reads:
        if b"\r" in read:
            if parts and parts[-1].endswith(b"\r") and read.startswith(b"\n"):
                parts[-1] = parts[-1][:-1]  # a CRLF split between two reads
            read = read.replace(b"\r\n", b"\n")
        seam = bool(parts) and parts[-1].endswith(b"\n") and read.startswith(b"\n")
        if b"\n\n" not in read and not seam:
            parts.append(read)
            size += len(read)
            if size > MAX_EVENT_BYTES:
                raise malformed()
            continue
        if parts:
            read = b"".join(parts) + read
        *blocks, rest = read.split(b"\n\n")
        parts, size = ([rest], len(rest)) if rest else ([], 0)
        if size > MAX_EVENT_BYTES:
            raise malformed()
        yield [data for block in blocks if (data := event_data(block)) is not None]
    if parts and (data := event_data(b"".join(parts))) is not None:
        yield [data]


def event_data(block: bytes) -> bytes | None:
    """The data of one event's lines; "event:", "id:", "retry:" and comments carry nothing we need."""
    if block.startswith(b"data: ") and b"\n" not in block:
        return block[6:]  # the usual shape: one data line
    data = [
        line[6:] if line.startswith(b"data: ") else line[5:]
        for line in block.split(b"\n")
        if line.startswith(b"data:")
    ]
    return b"\n".join(data) if data else None


def parse_chat(batches: Iterable[list[bytes]]) -> Generator[str, None, Usage | None]:
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


def parse_responses(batches: Iterable[list[bytes]]) -> Generator[str, None, Usage | None]:
    """Text (and Reasoning) from the Responses API's typed events up to ``response.completed``."""
    for batch in batches:
        texts: list[str] = []
        for data in batch:
            event = decode(data)
            kind = event.get("type")
            if kind == "response.output_text.delta" or kind in REASONING_EVENTS:
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
    code = error.get("code") if isinstance(error, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if code in RATE_LIMIT_CODES or kind == "rate_limit_error":
        return rate_limited(retry_after(httpx2.Headers(), message))
    if too_long_for_the_model(code, message):
        return too_long()
    suffix = f" ({code})" if isinstance(code, str) and code.replace("_", "").isalnum() else ""
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
    return code in TOO_LONG_CODES or (isinstance(message, str) and bool(TOO_LONG_MESSAGE.search(message)))


def too_long() -> UpstreamError:
    return UpstreamError(
        "The conversation is too long for the model: shorten it (fewer or shorter messages) "
        "or start a new one.",
        reason="upstream_context_length",
        status=400,
    )


def from_sdk_error(error: openai.APIError, model: str) -> UpstreamError:
    """Map the SDK's typed errors to the statuses clients get (504, 502, or a passed-on 429 or 400)."""
    # The provider's own message can quote part of our key, so only its status is passed on.
    if isinstance(error, openai.APITimeoutError):
        return UpstreamTimeout("The model did not answer in time.", reason="upstream_timeout")
    if isinstance(error, openai.APIConnectionError):
        return UpstreamError("The model service could not be reached.", reason="upstream_unreachable")
    if isinstance(error, openai.RateLimitError):
        return rate_limited(retry_after(error.response.headers, error_message(error)))
    if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
        return UpstreamError(
            "The service is misconfigured: the model provider rejected its API key.",
            reason="upstream_auth",
        )
    if isinstance(error, openai.NotFoundError):
        return UpstreamError(
            f"The model provider does not offer the model '{model}'.", reason="upstream_not_found"
        )
    if isinstance(error, openai.BadRequestError) and too_long_for_the_model(error.code, error_message(error)):
        return too_long()
    if isinstance(error, openai.APIStatusError):
        return UpstreamError(
            f"The model provider refused the request (HTTP {error.status_code}).",
            reason="upstream_status",
        )
    return UpstreamError(
        "The model service sent a response that could not be read.", reason="upstream_malformed"
    )


def error_message(error: openai.APIError) -> str | None:
    """The provider's own message, read for a wait time only, never passed on."""
    body = error.body.get("error", error.body) if isinstance(error.body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    return message if isinstance(message, str) else None


def retry_after(headers: httpx2.Headers, message: Any = None) -> int:
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
