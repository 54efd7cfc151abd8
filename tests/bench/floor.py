"""The floor: a raw gevent relay with no framework, measured beside the service in the same run.

``python -m tests.bench.floor --upstream URL --api chat|responses`` answers
``POST /api/chat/stream`` as the service's plain-text route does, and no more: hand-parsed
HTTP on both sides, one pooled keep-alive connection per concurrent request to the upstream,
``json.loads`` per event, one ``sendall`` per delta. Nothing of Flask, the SDK, validation,
logging or metrics. What it costs is what Python + gevent cost as usually written, on this
machine, today; the service's figures are read against it.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import BinaryIO  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

from gevent.server import StreamServer  # noqa: E402

PATHS = {"chat": "/chat/completions", "responses": "/responses"}
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n"


class Floor:
    def __init__(self, upstream: str, api: str) -> None:
        parts = urlsplit(upstream)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.path = (parts.path.rstrip("/") + PATHS[api]).encode()
        self.api = api
        self.idle: list[socket.socket] = []

    def handle(self, client: socket.socket, _address: object) -> None:
        reader = client.makefile("rb")
        try:
            while self.answer(reader, client):
                pass
        except OSError:
            pass
        finally:
            reader.close()
            client.close()

    def answer(self, reader: BinaryIO, client: socket.socket) -> bool:
        """One request on a kept-alive client connection; False when the client closed it."""
        length = 0
        line = reader.readline()
        if not line:
            return False
        while line not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line[15:])
            line = reader.readline()
        upstream, deltas = self.open(json.loads(reader.read(length))["message"])
        head = True
        for text in deltas:
            data = text.encode()
            chunk = b"%x\r\n%s\r\n" % (len(data), data)
            client.sendall(HEAD + chunk if head else chunk)
            head = False
        client.sendall(HEAD + b"0\r\n\r\n" if head else b"0\r\n\r\n")
        self.idle.append(upstream)
        return True

    def open(self, message: str) -> tuple[socket.socket, Iterator[str]]:
        """Ask the upstream (on a pooled connection) for a reply to ``message``: the connection,
        to be put back in ``idle`` once the reply's deltas have all been read, and the deltas."""
        if self.api == "chat":
            ask = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": message}]}
        else:
            ask = {"model": "gpt-4o-mini", "stream": True, "input": message}
        body = json.dumps(ask).encode()
        upstream = self.idle.pop() if self.idle else socket.create_connection(self.address)
        upstream.sendall(
            b"POST %s HTTP/1.1\r\nHost: upstream\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer sk-floor\r\nContent-Length: %d\r\n\r\n%s" % (self.path, len(body), body)
        )
        return upstream, self.deltas(upstream.makefile("rb"))

    def deltas(self, upstream: BinaryIO) -> Iterator[str]:
        """The reply's text deltas, read off the upstream's chunked SSE body to its end."""
        while upstream.readline() not in (b"\r\n", b""):
            pass  # the head: the fake always answers 200, chunked
        pending = b""
        while True:
            size = int(upstream.readline(), 16)
            if size == 0:
                upstream.readline()
                return
            pending += upstream.read(size + 2)[:-2]
            *events, pending = pending.split(b"\n\n")
            for event in events:
                for line in event.split(b"\n"):
                    if not line.startswith(b"data: ") or line == b"data: [DONE]":
                        continue
                    data = json.loads(line[6:])
                    if self.api == "chat":
                        choices = data.get("choices")
                        text = choices[0]["delta"].get("content") if choices else None
                    else:
                        text = data.get("delta") if data.get("type") == "response.output_text.delta" else None
                    if text:
                        yield text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--upstream", required=True, help="the upstream's base URL, e.g. http://127.0.0.1:9000/v1"
    )
    parser.add_argument("--api", choices=sorted(PATHS), default="chat")
    args = parser.parse_args()
    floor = Floor(args.upstream, args.api)
    server = StreamServer(("127.0.0.1", args.port), floor.handle, backlog=8192)
    server.start()  # bound and listening before it says so
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
