"""The ``chat`` command: send a message to the service and print the reply as it arrives."""

from __future__ import annotations

import argparse
import codecs
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TextIO

import requests

LINE_END = re.compile(r"\r\n|\r|\n")  # the three line endings of server-sent events
# C0 controls but tab and newline, DEL and C1 controls: a reply could move the cursor, rewrite a
# line or send the terminal commands with them (ESC [, CSI U+009B, \r).
CONTROLS = dict.fromkeys([*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)])


class Cut(Exception):
    """The event stream ended before its ``done`` or ``error`` event."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; the exit status is 0, 1 for a failed request, 2 for bad usage, 130 for Ctrl-C."""
    args = parse_args(argv)
    url = args.url.rstrip("/")
    try:
        return chat(args, url)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except requests.ConnectTimeout:
        say(f"cannot reach {url}: it did not accept the connection")
    except requests.Timeout:
        say(f"{url} went silent for {args.timeout:g} s")
    except (requests.exceptions.ChunkedEncodingError, Cut):
        print(file=sys.stderr)
        say(f"the connection to {url} broke before the reply was complete")
    except requests.ConnectionError:
        say(f"cannot reach {url}: is the server running?")
    except (requests.RequestException, ValueError):
        say(f"{url} sent an answer that could not be read")
    return 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="chat", description=__doc__)
    parser.add_argument("message", nargs="*", help="the message (read from standard input when left out)")
    parser.add_argument("--url", default="http://localhost:8000", help="the service (default: %(default)s)")
    parser.add_argument("--no-stream", action="store_true", help="wait for the whole reply (POST /api/chat)")
    parser.add_argument(
        "--api-key", default=os.environ.get("CHAT_API_KEY"), help="bearer token (default: $CHAT_API_KEY)"
    )
    parser.add_argument("--model", help="a model the service allows")
    parser.add_argument("--system", help="an instruction for the model, e.g. 'You are terse.'")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the server")
    stored = parser.add_mutually_exclusive_group()
    stored.add_argument("--conversation", metavar="ID", help="continue the stored conversation ID")
    stored.add_argument(
        "--new", action="store_true", help="start a stored conversation; its id goes to stderr"
    )
    return parser.parse_args(argv)


def chat(args: argparse.Namespace, url: str) -> int:
    """Send the message, as a turn of a stored conversation with --conversation or --new; print the reply."""
    message = " ".join(args.message) if args.message else sys.stdin.read()
    if not message.strip():
        say("give a message, or pipe one in on standard input")
        return 2
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    settings = {"model": args.model, "instructions": args.system}
    settings = {name: value for name, value in settings.items() if value}
    body: dict[str, Any] = {"message": message}
    if args.new:  # the settings become the new conversation's defaults
        response = requests.post(
            f"{url}/api/conversations", json=settings, headers=headers, timeout=(10, args.timeout)
        )
        if not response.ok:
            return fail(response)
        body["conversation_id"] = field(response.json(), "id")
        print(f"conversation: {printable(body['conversation_id'])}", file=sys.stderr)
    else:  # for this turn only (in a stored conversation, over its defaults)
        body.update(settings)
        if args.conversation is not None:
            body["conversation_id"] = args.conversation
    if args.no_stream:
        return ask(f"{url}/api/chat", body, headers, args.timeout)
    return stream(f"{url}/api/chat/stream", body, headers, args.timeout)


def ask(url: str, body: dict[str, Any], headers: dict[str, str], timeout: float) -> int:
    """POST to /api/chat and print the whole reply."""
    response = requests.post(url, json=body, headers=headers, timeout=(10, timeout))
    if not response.ok:
        return fail(response)
    print(printable(field(response.json(), "reply")))
    return 0


def stream(url: str, body: dict[str, Any], headers: dict[str, str], timeout: float) -> int:
    """POST to /api/chat/stream in the SSE framing and write each token as it arrives."""
    headers = {**headers, "Accept": "text/event-stream"}
    with requests.post(url, json=body, headers=headers, stream=True, timeout=(10, timeout)) as response:
        if not response.ok:
            return fail(response)
        if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
            raise ValueError("the answer is not an event stream")
        error = relay(response.iter_content(chunk_size=None), sys.stdout)
    print()
    if error is not None:
        say(error)
        return 1
    return 0


def relay(chunks: Iterable[bytes], out: TextIO) -> str | None:
    """Write each token event's text to ``out`` as it comes; None after ``done``, or the error sentence.

    Raises ``Cut`` when the stream ends without either.
    """
    # A token may end inside a UTF-16 surrogate pair (its JSON escapes the half): the decoder keeps
    # the half until the next token completes it.
    pairs = codecs.getincrementaldecoder("utf-16-le")(errors="replace")
    for data in events(lines(chunks)):
        event = json.loads(data)
        kind = field(event, "type")
        if kind == "token":
            out.write(printable(pairs.decode(field(event, "content").encode("utf-16-le", "surrogatepass"))))
            out.flush()
        elif kind == "error":
            return field(event, "message")
        elif kind == "done":
            return None
        # metadata, reasoning and any later kind of event are not part of the reply
    raise Cut


def lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """The lines of a byte stream cut anywhere, each without its \\n, \\r\\n or \\r ending."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")  # an opening BOM is dropped
    pending = ""
    for chunk in chunks:
        pending += decoder.decode(chunk)
        # A last \r may be the first half of \r\n: it stays with the unfinished line until more comes.
        held = "\r" if pending.endswith("\r") else ""
        *complete, pending = LINE_END.split(pending.removesuffix("\r"))
        pending += held
        yield from complete
    *complete, _unfinished = LINE_END.split(pending + decoder.decode(b"", final=True))
    yield from complete


def events(lines: Iterable[str]) -> Iterator[str]:
    """The data of each event: its ``data:`` lines joined with \\n; comments and other fields ignored."""
    data: list[str] = []
    for line in lines:
        if not line:  # a blank line ends the event
            if data:
                yield "\n".join(data)
            data = []
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            if name == "data":
                data.append(value.removeprefix(" "))


def field(data: Any, name: str) -> str:
    """The string ``name`` of the JSON object ``data``; ValueError when it has none."""
    value = data.get(name) if isinstance(data, dict) else None
    if not isinstance(value, str):
        raise ValueError(f"the answer has no string {name!r}")
    return value


def printable(text: str) -> str:
    """``text`` safe to write to a terminal: no control characters but newline and tab, no lone surrogate."""
    paired = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return paired.translate(CONTROLS)


def say(sentence: str) -> None:
    """Print a sentence to stderr, after the command's name."""
    print(f"chat: {printable(sentence)}", file=sys.stderr)


def fail(response: requests.Response) -> int:
    """Print the server's error sentence (or its status) to stderr."""
    try:
        sentence = field(response.json(), "error")
    except ValueError:
        sentence = f"the server answered HTTP {response.status_code}"
    say(sentence)
    return 1


def main_exit() -> None:
    """The console script's entry point."""
    sys.exit(main())


if __name__ == "__main__":
    main_exit()
