"""A fake OpenAI-compatible server on loopback, for tests and benchmarks.

It speaks the real wire formats: Chat Completions streams (``data: {chat.completion.chunk}``
lines ending in ``data: [DONE]``) and the Responses API's typed events. A ``Script`` says
what to send and which fault to produce; every request and every stream's end is recorded,
with the time the fake saw it, so tests can check what the service sent and when it hung up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

BURST_EVENTS = 4096  # events per write in a burst


@dataclass
class Script:
    """What the fake sends for each request (and the fault to produce, if any)."""

    deltas: list[str] = field(default_factory=lambda: ["Hello", ",", " world", "!"])
    reasoning: list[str] = field(default_factory=list)  # reasoning deltas sent before the answer
    reasoning_field: str = "reasoning_content"  # Chat Completions: or "reasoning" (Ollama)
    delay: float = 0.0  # seconds between two events
    # All the deltas in one write (delay is ignored): a model or cache that streams as fast as
    # the network allows, which one write per delta cannot reach.
    burst: bool = False
    first_delay: float = 0.0  # silence after the headers, before the first delta
    status: int = 200  # anything else: a JSON error body with this status
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers
    error_message: str = "Scripted failure."
    error_code: str | None = None
    error_event: str = "error"  # Responses API: "error", or "failed" for a response.failed event
    no_headers: bool = False  # accept the request, then never answer
    raw_response: bytes | None = None  # sent as it is in place of an answer, then the connection closes
    # Silence before the response headers: a model still loading, or a gateway (LiteLLM) that
    # sends its headers only with the first token.
    headers_delay: float = 0.0
    stall_after: int | None = None  # after N deltas, go silent until the client leaves
    cut_after: int | None = None  # after N deltas, drop the connection mid-body
    malformed_after: int | None = None  # after N deltas, send an event that is not JSON
    error_after: int | None = None  # after N deltas, send an error event
    usage: bool = True  # report token usage at the end
    finish: bool = True  # send the end of the stream ([DONE] / response.completed)


@dataclass
class Received:
    """One request as the fake saw it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float


@dataclass
class StreamRecord:
    """One streamed response: when it opened and closed, and why it closed."""

    path: str
    opened_at: float
    deltas_sent: int = 0
    closed_at: float | None = None
    ended_by: str | None = None  # "complete", "client", "cut", "error"


class FakeUpstream:
    """Runs the fake on its own event loop thread; ``base_url`` is its ``/v1`` address."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.per_model: dict[str, Script] = {}  # a request naming one of these models gets its script
        self.requests: list[Received] = []
        self.streams: list[StreamRecord] = []
        self.connections = 0  # TCP connections accepted
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.requested_port = 0
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeUpstream:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        future.result(timeout=5)
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def reset(self, script: Script | None = None) -> None:
        """Forget what was recorded and use a new script."""
        self.script = script or Script()
        self.per_model = {}
        self.requests.clear()
        self.streams.clear()
        self.connections = 0

    def open_streams(self) -> int:
        return sum(1 for s in self.streams if s.closed_at is None)

    def wait_until(self, predicate: Any, timeout: float = 5.0) -> Any:
        """``tests.support.wait.wait_until``, at hand wherever the fake is."""
        from .support.wait import wait_until  # not at the top: tests.support imports this module

        return wait_until(predicate, timeout)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.requested_port, limit=2**20, backlog=4096
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
                body = json.loads(raw) if raw else {}
                self.requests.append(Received(path, headers, body, time.monotonic()))
                if not await self._respond(path, body, reader, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass  # the fake is stopping
        finally:
            writer.close()

    async def _respond(
        self, path: str, body: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection must not be reused."""
        script = self.per_model.get(body.get("model"), self.script)
        if script.no_headers:
            await reader.read(1)  # until the client gives up
            return False
        if script.raw_response is not None:
            writer.write(script.raw_response)
            await writer.drain()
            return False
        if script.status != 200:
            error = {"message": script.error_message, "type": "scripted", "code": script.error_code}
            payload = json.dumps({"error": error}).encode()
            extra = "".join(f"{k}: {v}\r\n" for k, v in script.headers.items())
            writer.write(
                f"HTTP/1.1 {script.status} Scripted\r\ncontent-type: application/json\r\n"
                f"content-length: {len(payload)}\r\n{extra}\r\n".encode()
                + payload
            )
            await writer.drain()
            return True
        record = StreamRecord(path, time.monotonic())
        self.streams.append(record)
        # A read that returns means the client hung up (it sends nothing while we stream).
        hangup = asyncio.ensure_future(reader.read(1))
        sending = asyncio.ensure_future(self._send_stream(path, body, script, writer, record))
        done, _ = await asyncio.wait({hangup, sending}, return_when=asyncio.FIRST_COMPLETED)
        record.closed_at = time.monotonic()
        if sending in done and not sending.cancelled() and sending.exception() is None:
            hangup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await hangup  # the next request may only be read once this read is gone
            record.ended_by = sending.result()
            return record.ended_by == "complete"
        failed = sending in done and (sending.cancelled() or sending.exception() is not None)
        record.ended_by = "client" if hangup in done or failed else "error"
        sending.cancel()
        hangup.cancel()
        return False

    async def _send_stream(
        self,
        path: str,
        body: dict[str, Any],
        script: Script,
        writer: asyncio.StreamWriter,
        record: StreamRecord,
    ) -> str:
        responses = path.endswith("/responses")
        model = body.get("model", "unknown")
        if script.headers_delay:
            await asyncio.sleep(script.headers_delay)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n"
        )
        events = ResponsesEvents(model) if responses else ChatEvents(model, body)
        await send(writer, events.start())
        if script.first_delay:
            await asyncio.sleep(script.first_delay)
        for index, thought in enumerate(script.reasoning):
            if index and script.delay:
                await asyncio.sleep(script.delay)
            await send(writer, events.reasoning(thought, script.reasoning_field))
        if script.burst:
            # Each event of Chat Completions depends on its text alone: rendered once. Written
            # a megabyte or so at a time: the socket's buffer refills faster than it is read.
            rendered = {} if responses else {text: events.delta(text) for text in set(script.deltas)}
            for start in range(0, len(script.deltas), BURST_EVENTS):
                texts = script.deltas[start : start + BURST_EVENTS]
                await send(writer, b"".join(rendered.get(text) or events.delta(text) for text in texts))
                record.deltas_sent += len(texts)
        for index, text in enumerate(() if script.burst else script.deltas):
            if index == script.stall_after:
                await asyncio.Event().wait()
            if index == script.cut_after:
                writer.transport.abort()
                return "cut"
            if index == script.malformed_after:
                await send(writer, b'data: {"choices": [{"delta": {"content": "oops"\n\n')
                await send(writer, b"")
                return "complete"
            if index == script.error_after:
                await send(writer, events.error(script.error_message, script.error_code, script.error_event))
                await send(writer, b"")
                return "complete"
            if index and script.delay:
                await asyncio.sleep(script.delay)
            await send(writer, events.delta(text))
            record.deltas_sent += 1
        if script.stall_after is not None and script.stall_after >= len(script.deltas):
            await asyncio.Event().wait()
        if script.cut_after is not None and script.cut_after >= len(script.deltas):
            writer.transport.abort()
            return "cut"
        if script.finish:
            await send(writer, events.finish(len(script.deltas), script.usage))
        await send(writer, b"")  # the last chunk of a chunked body
        return "complete"


async def send(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Write ``data`` as one HTTP chunk (empty: the terminating chunk) and flush it."""
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))
    await writer.drain()


def sse(payload: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


class ChatEvents:
    """``chat.completion.chunk`` events as OpenAI sends them."""

    def __init__(self, model: str, body: dict[str, Any]) -> None:
        self.model = model
        self.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
        event: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "choices": choices,
        }
        if self.include_usage:
            event["usage"] = usage
        return event

    def start(self) -> bytes:
        delta = {"role": "assistant", "content": "", "refusal": None}
        return sse(self.chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]))

    def delta(self, text: str) -> bytes:
        choice = {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}
        return sse(self.chunk([choice]))

    def reasoning(self, text: str, name: str) -> bytes:
        choice = {"index": 0, "delta": {"content": None, name: text}, "logprobs": None, "finish_reason": None}
        return sse(self.chunk([choice]))

    def error(self, message: str, code: str | None, kind: str) -> bytes:
        return sse({"error": {"message": message, "type": "server_error", "code": code}})

    def finish(self, count: int, usage: bool) -> bytes:
        out = sse(self.chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]))
        if usage and self.include_usage:
            counts = {"prompt_tokens": 9, "completion_tokens": count, "total_tokens": 9 + count}
            out += sse(self.chunk([], counts))
        return out + b"data: [DONE]\n\n"


class ResponsesEvents:
    """The Responses API's typed events, ``response.created`` to ``response.completed``."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.sequence = 0
        self.text = ""

    def event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return sse(payload, event=kind)

    def response(self, status: str, usage: dict[str, int] | None = None) -> dict[str, Any]:
        output = []
        if status != "in_progress":
            part = {"type": "output_text", "text": self.text, "annotations": []}
            output = [{"id": "msg_fake", "type": "message", "role": "assistant", "content": [part]}]
        return {
            "id": "resp_fake",
            "object": "response",
            "created_at": 1_700_000_000,
            "status": status,
            "model": self.model,
            "output": output,
            "usage": usage,
        }

    def start(self) -> bytes:
        part = {"type": "output_text", "text": "", "annotations": []}
        item = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        return (
            self.event("response.created", response=self.response("in_progress"))
            + self.event("response.in_progress", response=self.response("in_progress"))
            + self.event("response.output_item.added", output_index=0, item=item)
            + self.event(
                "response.content_part.added", item_id="msg_fake", output_index=0, content_index=0, part=part
            )
        )

    def delta(self, text: str) -> bytes:
        self.text += text
        return self.event(
            "response.output_text.delta",
            item_id="msg_fake",
            output_index=0,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def reasoning(self, text: str, name: str) -> bytes:
        return self.event(
            "response.reasoning_summary_text.delta",
            item_id="rs_fake",
            output_index=0,
            summary_index=0,
            delta=text,
        )

    def error(self, message: str, code: str | None, kind: str) -> bytes:
        if kind == "failed":
            response = self.response("failed") | {"error": {"code": code, "message": message}}
            return self.event("response.failed", response=response)
        return self.event("error", message=message, code=code, param=None)

    def finish(self, count: int, usage: bool) -> bytes:
        counts = {"input_tokens": 9, "output_tokens": count, "total_tokens": 9 + count} if usage else None
        return self.event(
            "response.output_text.done", item_id="msg_fake", output_index=0, content_index=0, text=self.text
        ) + self.event("response.completed", response=self.response("completed", counts))


def main() -> None:
    """Run the fake on its own: ``python -m tests.fake_upstream --port 9999 --deltas 20 --delay 0.02``."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--deltas", type=int, default=20, help="deltas per reply")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between deltas")
    args = parser.parse_args()
    server = FakeUpstream(Script(deltas=[f" tok{i}" for i in range(args.deltas)], delay=args.delay))
    server.requested_port = args.port
    server.start()
    print(server.base_url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
