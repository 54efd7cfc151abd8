"""The ``chat`` command: send a message to the service and print the reply as it arrives."""

from __future__ import annotations

import argparse
import codecs
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import requests

LINE_END = re.compile(r"\r\n|\r|\n")  # the three line endings of server-sent events
# C0 controls but tab and newline, DEL and C1 controls: a reply could move the cursor, rewrite a
# line or send the terminal commands with them (ESC [, CSI U+009B, \r).
CONTROLS = dict.fromkeys([*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)])


RESUME_TRIES = 6  # reconnections to a reply whose connection broke before giving up on it
STOPPED = "the reply was stopped before its end"


class Cut(Exception):
    """The event stream ended before its ``done`` or ``error`` event."""


@dataclass
class Progress:
    """How far a reply has been read: its last event's id, which stored reply it is, what was printed."""

    last_id: str | None = None
    message_id: str | None = None
    printed: str = ""


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
    parser.add_argument(
        "--follow",
        action="store_true",
        help="with --conversation and no message: follow the reply being written there (none: exit 0)",
    )
    args = parser.parse_args(argv)
    if args.follow and (args.conversation is None or args.message or args.no_stream):
        parser.error("--follow takes --conversation ID and no message (nor --no-stream)")
    return args


def chat(args: argparse.Namespace, url: str) -> int:
    """Send the message, as a turn of a stored conversation with --conversation or --new; print the reply."""
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    if args.follow:
        return follow(url, args.conversation, headers, args.timeout)
    message = " ".join(args.message) if args.message else sys.stdin.read()
    if not message.strip():
        say("give a message, or pipe one in on standard input")
        return 2
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
        return ask(url, body, headers, args.timeout)
    return stream(url, body, headers, args.timeout)


def ask(url: str, body: dict[str, Any], headers: dict[str, str], timeout: float) -> int:
    """POST to /api/chat and print the whole reply."""
    try:
        response = requests.post(f"{url}/api/chat", json=body, headers=headers, timeout=(10, timeout))
    except KeyboardInterrupt:
        conversation = body.get("conversation_id")
        if conversation is not None:  # its reply is the server's: it would go on without us
            stop(url, conversation, headers)
        raise
    if not response.ok:
        return fail(response)
    print(printable(field(response.json(), "reply")))
    return 0


def stream(url: str, body: dict[str, Any], headers: dict[str, str], timeout: float) -> int:
    """POST to /api/chat/stream in the SSE framing and write each token as it arrives.

    In a conversation the reply is the server's: a connection that breaks is picked up where it
    broke, and Ctrl-C stops the reply on the server.
    """
    headers = {**headers, "Accept": "text/event-stream"}
    conversation = body.get("conversation_id")
    progress = Progress()
    try:
        with requests.post(
            f"{url}/api/chat/stream", json=body, headers=headers, stream=True, timeout=(10, timeout)
        ) as response:
            if not response.ok:
                return fail(response)
            if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
                raise ValueError("the answer is not an event stream")
            try:
                error = relay(response.iter_content(chunk_size=None), sys.stdout, progress)
            except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError, Cut):
                if conversation is None:
                    raise
                error = resume(url, conversation, headers, timeout, progress)
    except KeyboardInterrupt:
        if conversation is not None:  # its reply is the server's: it would go on without us
            stop(url, conversation, headers)
        raise
    return ended(error)


def follow(url: str, conversation: str, headers: dict[str, str], timeout: float) -> int:
    """Follow the reply being written in ``conversation`` to its end; 0 at once when there is none."""
    progress = Progress()
    try:
        error = resume(url, conversation, {**headers, "Accept": "text/event-stream"}, timeout, progress)
    except KeyboardInterrupt:
        if progress.message_id is not None:
            stop(url, conversation, headers)
        raise
    if error is None and progress.message_id is None:
        return 0  # nothing was being written
    return ended(error)


def resume(
    url: str, conversation: str, headers: dict[str, str], timeout: float, progress: Progress
) -> str | None:
    """Read the conversation's reply from where ``progress`` stands to its end (reconnecting while
    the connection keeps breaking); None when it ended well, else the sentence to print."""
    address = f"{url}/api/conversations/{conversation}/stream"
    for attempt in range(RESUME_TRIES):
        # Event ids count within one reply: the one being read is named, so a newer one is not taken for it.
        query = {} if progress.message_id is None else {"reply": progress.message_id}
        if attempt:
            time.sleep(min(0.25 * 2**attempt, 4.0))
        asked = dict(headers)
        if progress.last_id is not None:
            asked["Last-Event-ID"] = progress.last_id
        try:
            with requests.get(
                address, params=query, headers=asked, stream=True, timeout=(10, timeout)
            ) as response:
                if response.status_code == 204:
                    return stored_end(url, conversation, headers, timeout, progress)
                if not response.ok:
                    fail(response)
                    return "the reply could not be followed"
                return relay(response.iter_content(chunk_size=None), sys.stdout, progress)
        except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError, Cut):
            continue  # broke again: once more from where it stands now
    raise Cut


def stored_end(
    url: str, conversation: str, headers: dict[str, str], timeout: float, progress: Progress
) -> str | None:
    """Nothing more is being written: print what the stored reply has beyond what was printed."""
    if progress.message_id is None:
        return None  # no reply was being written to begin with
    response = requests.get(f"{url}/api/conversations/{conversation}", headers=headers, timeout=(10, timeout))
    if not response.ok:
        fail(response)
        return "the reply could not be read back"
    messages = response.json().get("messages")
    found = [m for m in messages if isinstance(m, dict) and m.get("id") == progress.message_id]
    if not found:
        return "the reply is gone"
    content, status = field(found[0], "content"), field(found[0], "status")
    if content.startswith(progress.printed):
        sys.stdout.write(printable(content[len(progress.printed) :]))
    return {"complete": None, "stopped": STOPPED}.get(status, f"the reply ended as {status}")


def stop(url: str, conversation: str, headers: dict[str, str]) -> None:
    """Stop the reply on the server (Ctrl-C): best effort, the command is leaving anyway."""
    try:
        requests.post(f"{url}/api/conversations/{conversation}/stop", headers=headers, timeout=(3, 10))
    except requests.RequestException:
        say("the reply could not be stopped on the server")


def ended(error: str | None) -> int:
    print()
    if error is not None:
        say(error)
        return 1
    return 0


def relay(chunks: Iterable[bytes], out: TextIO, progress: Progress | None = None) -> str | None:
    """Write each token event's text to ``out`` as it comes; None after ``done``, or the error sentence.

    Raises ``Cut`` when the stream ends without either.
    """
    progress = progress or Progress()
    # A token may end inside a UTF-16 surrogate pair (its JSON escapes the half): the decoder keeps
    # the half until the next token completes it.
    pairs = codecs.getincrementaldecoder("utf-16-le")(errors="replace")
    seen: dict[str, str] = {}
    for data in events(lines(chunks), seen):
        event = json.loads(data)
        kind = field(event, "type")
        if kind == "token":
            text = field(event, "content")
            out.write(printable(pairs.decode(text.encode("utf-16-le", "surrogatepass"))))
            out.flush()
            progress.printed += text
        elif kind == "error":
            return field(event, "message")
        elif kind == "done":
            return STOPPED if event.get("status") == "stopped" else None
        elif kind == "metadata" and isinstance(event.get("message_id"), str) and progress.message_id is None:
            progress.message_id = event["message_id"]
        # reasoning and any later kind of event are not part of the reply
        progress.last_id = seen.get("id", progress.last_id)
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


def events(lines: Iterable[str], seen: dict[str, str] | None = None) -> Iterator[str]:
    """The data of each event: its ``data:`` lines joined with \\n; comments and other fields ignored
    but ``id:``, which ``seen["id"]`` follows (a conversation's reply numbers its events)."""
    data: list[str] = []
    event_id = None
    for line in lines:
        if not line:  # a blank line ends the event
            if data:
                if event_id is not None and seen is not None:
                    seen["id"] = event_id
                yield "\n".join(data)
            data, event_id = [], None
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            if name == "data":
                data.append(value.removeprefix(" "))
            elif name == "id":
                event_id = value.removeprefix(" ")


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
