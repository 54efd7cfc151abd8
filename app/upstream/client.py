"""The SDK's client, each streamed request built from one the SDK built for its path.

Building a request (default, auth and retry headers merged and checked, the URL parsed
and joined to the base URL, then httpx2's own merge of the same) was a sixth of the worker's
CPU at one client (measured with py-spy). What it builds depends only on the client's
settings (fixed once the app has built it), the path, the retry count and the headers, never
on the body: so the SDK builds it once per path, retry count and headers with no body, and
each request copies its URL, headers and timeout with a body of its own. The SDK still
authenticates, retries, sends and maps errors; a request of any other shape than the one
``llm`` sends is built by the SDK as usual.

A reply whose client has left is not sent again: its send ends in ``connections.HungUp``,
which the SDK does not retry, whether the hang-up came before the send or broke it.

The SDK offers no public door for either: the methods it calls for each request
(``_build_request``, ``_send_request``), what the template reads to know a request is plain
(``_provider_runtime``, ``_api_key_provider``, ``_idempotency_header``) and its request options
(``openai._models.FinalRequestOptions``) are private names, each checked by
tests/test_contracts.py, which names the hook and the SDK's release when one changes.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
from openai._models import FinalRequestOptions

from . import connections


class OpenAI(openai.OpenAI):
    """``openai.OpenAI``, with a template per path for the JSON POSTs the relay sends (named as
    the SDK's own: the SDK names its User-Agent after the class)."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self._templates: dict[tuple[str, int, tuple[tuple[str, Any], ...]], httpx2.Request] = {}

    def _build_request(self, options: FinalRequestOptions, *, retries_taken: int = 0) -> httpx2.Request:
        body = options.json_data
        plain = (
            type(body) is dict
            and options.method == "post"
            and options.content is None
            and options.extra_json is None
            and not options.params
            and options.files is None
            and self._provider_runtime is None
            and self._api_key_provider is None  # a key that can change is read per request
            and self._idempotency_header is None  # a key per request would be frozen in the template
            and isinstance(options.timeout, openai.NotGiven)  # the client's, the same for every request
        )
        headers = tuple(options.headers.items()) if options.headers else ()
        if not plain or not all(type(value) is str for _, value in headers):
            return super()._build_request(options, retries_taken=retries_taken)
        key = (options.url, retries_taken, headers)
        template = self._templates.get(key)
        if template is None:
            # The SDK's own request for this path, with no body (and so without its length).
            template = super()._build_request(
                options.model_copy(update={"json_data": None}), retries_taken=retries_taken
            )
            del template.headers["Content-Length"]
            self._templates[key] = template
        content = dumps(body)
        # A stream, not content: httpx2 would look every header up again to add the ones the
        # template has (and decode them all to learn their encoding, which the template knows).
        request = httpx2.Request(
            "POST", template.url, headers=template.headers, stream=httpx2.ByteStream(content)
        )
        request.headers.encoding = template.headers.encoding
        request.headers["Content-Length"] = str(len(content))
        request.extensions = dict(template.extensions)
        request.read()
        return request

    def _send_request(self, request: httpx2.Request, *, stream: bool, **kwargs: Any) -> httpx2.Response:
        if connections.hung_up():
            raise connections.HungUp  # the client left while the SDK waited to retry
        try:
            return super()._send_request(request, stream=stream, **kwargs)
        except httpx2.TransportError:
            if connections.hung_up():
                raise connections.HungUp from None  # the hang-up broke the send: no retry
            raise


def dumps(body: object) -> bytes:
    """A request's JSON as the SDK writes it (httpx's settings), for the plain values ``llm`` sends."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
