"""The OpenAI (or OpenAI-compatible) model behind the official SDK.

``stream(chat)`` yields the reply's text as it arrives, then one Usage (or None). The SDK
builds, authenticates and sends the request, retries before any byte arrives, and maps
HTTP errors to its typed exceptions; the body is taken raw (its ``request`` with
``cast_to=httpx2.Response`` and options built once per path), split into events by ``sse`` and read by
``events`` with orjson, which costs a small fraction of building the SDK's typed parameter
and chunk objects. The SDK's errors are mapped here to the statuses clients get.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Generator, Iterator, Mapping
from typing import Any

import httpx2
import openai
from openai._models import FinalRequestOptions

from ..errors import UpstreamError, UpstreamTimeout
from . import client as sdk
from . import connections, http1, sse, transport
from .events import (
    malformed,
    rate_limited,
    read_chat,
    read_responses,
    retry_after,
    too_long,
    too_long_for_the_model,
)
from .stream import ChatRequest, Delta

OPENAI_URL = "https://api.openai.com/v1"
PLACEHOLDER_KEY = "not-needed"  # keyless local servers (Ollama, vLLM) still get a bearer header
# Direct connections go through transport.Transport, whose pool checks only the connection it
# takes, keeping as many idle connections as may be open. Proxied ones keep httpcore2's pool,
# which probes every idle connection at each request's start and end: it keeps few.
IDLE_PROXIED = 8
# Raw bytes are the body only when nothing compresses it; SSE is not worth compressing anyway.
STREAM: Any = {"headers": {"Accept": "text/event-stream", "Accept-Encoding": "identity"}}
# The SDK's description of a request, as its ``post`` builds it: constructing this pydantic
# model deep-copies its field defaults each time, 7% of a stream's opening (measured), so
# each path's is built once and copied (the SDK copies it again before any use).
REQUESTS = {
    path: FinalRequestOptions.construct(method="post", url=path, **STREAM)
    for path in ("/chat/completions", "/responses")
}


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
        limit = config["UPSTREAM_MAX_CONNECTIONS"]
        limits = httpx2.Limits(max_connections=limit, max_keepalive_connections=min(limit, IDLE_PROXIED))
        tls = httpx2.create_ssl_context()  # one for all pools: building one reads the CA bundle
        direct = transport.Transport(tls, limit, max_idle=limit)
        self.client = sdk.OpenAI(
            api_key=config["OPENAI_API_KEY"] or PLACEHOLDER_KEY,
            base_url=config["OPENAI_BASE_URL"] or OPENAI_URL,
            # The read timeout bounds the silence between two chunks, not the whole reply.
            timeout=httpx2.Timeout(timeout, connect=timeout),
            max_retries=config["OPENAI_MAX_RETRIES"],
            http_client=openai.DefaultHttpxClient(
                transport=direct, mounts=connections.proxied(limits, tls), limits=limits, verify=tls
            ),
        )
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
            path, body, parse = "/responses", responses_params(chat), read_responses
        else:
            path, body, parse = "/chat/completions", chat_params(chat, self.stream_usage), read_chat
        try:
            try:
                with connections.sending(reply):
                    options = REQUESTS[path].model_copy(update={"json_data": body})
                    response = self.client.request(httpx2.Response, options, stream=True)
            except BaseException:
                # The SDK read an error answer and gave its connection back to the pool, where
                # it may already carry another reply: this one must never shut it down.
                reply.sock = None
                raise
            reads = response.iter_raw()
            try:
                if reply.cancelled:
                    reply.cancel()
                    raise connections.HungUp
                usage = yield from parse(sse.batches(reads))
                reply.complete = True
                yield usage  # the last item: the consumer closes us once it is sent on
            finally:
                reply.sock = None
                if reply.complete:
                    drain(reads)
                response.close()
        except connections.HungUp:
            raise UpstreamError("The client left before the model answered.", reason="client_gone") from None
        except sse.EventTooLong:
            raise malformed() from None
        except http1.Malformed:
            raise unreadable() from None
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
        self.client.close()


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


def from_sdk_error(error: openai.APIError, model: str) -> UpstreamError:
    """Map the SDK's typed errors to the statuses clients get (504, 502, or a passed-on 429 or 400)."""
    # The provider's own message can quote part of our key, so only its status is passed on.
    if isinstance(error, openai.APITimeoutError):
        return UpstreamTimeout("The model did not answer in time.", reason="upstream_timeout")
    if isinstance(error, openai.APIConnectionError) and isinstance(error.__cause__, http1.Malformed):
        return unreadable()  # the head of its answer broke the HTTP grammar
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
    return unreadable()


def unreadable() -> UpstreamError:
    """The model service's answer broke HTTP (or the SDK could not read it): nothing is guessed."""
    return UpstreamError(
        "The model service sent a response that could not be read.", reason="upstream_malformed"
    )


def error_message(error: openai.APIError) -> str | None:
    """The provider's own message, read for a wait time only, never passed on."""
    body = error.body.get("error", error.body) if isinstance(error.body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    return message if isinstance(message, str) else None
