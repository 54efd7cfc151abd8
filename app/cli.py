"""The ``chat`` command: send a message to the service and print the reply as it arrives."""

from __future__ import annotations

import argparse
import codecs
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import requests

TRAILER = "\n[error: "  # how the stream route ends a reply that failed after it started


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; the exit status is 0, 1 for a failed request, 2 for bad usage, 130 for Ctrl-C."""
    args = parse_args(argv)
    url = args.url.rstrip("/")
    try:
        message = " ".join(args.message) if args.message else sys.stdin.read()
        if not message.strip():
            print("chat: give a message, or pipe one in on standard input", file=sys.stderr)
            return 2
        body: dict[str, Any] = {"message": message}
        if args.model:
            body["model"] = args.model
        if args.system:
            body["instructions"] = args.system
        headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        if args.no_stream:
            return ask(f"{url}/api/chat", body, headers, args.timeout)
        return stream(f"{url}/api/chat/stream", body, headers, args.timeout)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except requests.ConnectTimeout:
        print(f"chat: cannot reach {url}: it did not accept the connection", file=sys.stderr)
    except requests.Timeout:
        print(f"chat: {url} went silent for {args.timeout:g} s", file=sys.stderr)
    except requests.exceptions.ChunkedEncodingError:
        print(f"\nchat: the connection to {url} broke before the reply was complete", file=sys.stderr)
    except requests.ConnectionError:
        print(f"chat: cannot reach {url}: is the server running?", file=sys.stderr)
    except (requests.RequestException, ValueError, KeyError):
        print(f"chat: {url} sent an answer that could not be read", file=sys.stderr)
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
    return parser.parse_args(argv)


def ask(url: str, body: dict[str, Any], headers: dict[str, str], timeout: float) -> int:
    """POST to /api/chat and print the whole reply."""
    response = requests.post(url, json=body, headers=headers, timeout=(10, timeout))
    if response.status_code != 200:
        return fail(response)
    print(response.json()["reply"])
    return 0


def stream(url: str, body: dict[str, Any], headers: dict[str, str], timeout: float) -> int:
    """POST to /api/chat/stream and write each chunk as it arrives."""
    with requests.post(url, json=body, headers=headers, stream=True, timeout=(10, timeout)) as response:
        if response.status_code != 200:
            return fail(response)
        error = relay(response.iter_content(chunk_size=None), sys.stdout)
    print()
    if error:
        print(f"chat: {error}", file=sys.stderr)
        return 1
    return 0


def relay(chunks: Iterable[bytes], out: TextIO) -> str | None:
    """Write the text of ``chunks`` to ``out`` as it comes; returns the in-band error, if any.

    Only a last line that could be the start of the error trailer is held back.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    for chunk in chunks:
        pending += decoder.decode(chunk)
        cut = pending.rfind("\n")
        keep = pending[cut:] if cut >= 0 else ""
        if not (TRAILER.startswith(keep) or keep.startswith(TRAILER)):
            keep = ""
        out.write(pending[: len(pending) - len(keep)])
        out.flush()
        pending = keep
    pending += decoder.decode(b"", final=True)
    if pending.startswith(TRAILER) and pending.endswith("]"):
        return pending[len(TRAILER) : -1]
    out.write(pending)
    return None


def fail(response: requests.Response) -> int:
    """Print the server's error sentence (or its status) to stderr."""
    try:
        sentence = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        sentence = f"the server answered HTTP {response.status_code}"
    print(f"chat: {sentence}", file=sys.stderr)
    return 1


def main_exit() -> None:
    """The console script's entry point."""
    sys.exit(main())


if __name__ == "__main__":
    main_exit()
