from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import requests
import responses

from app import cli

URL = "http://chat.test"
STREAM = f"{URL}/api/chat/stream"
WHOLE = f"{URL}/api/chat"


def run(*argv: str) -> int:
    return cli.main(["--url", URL, *argv])


@responses.activate
def test_streams_the_reply_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    responses.post(
        STREAM, body=b"Once upon a time \xf0\x9f\xa4\x96.", content_type="text/plain; charset=utf-8"
    )
    assert run("Tell", "me", "a", "story") == 0
    assert capsys.readouterr() == ("Once upon a time 🤖.\n", "")
    sent = json.loads(responses.calls[0].request.body or b"")
    assert sent == {"message": "Tell me a story"}


def test_each_chunk_is_written_and_flushed_as_it_comes() -> None:
    class Recorder(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.flushed: list[str] = []

        def flush(self) -> None:
            self.flushed.append(self.getvalue())

    out = Recorder()
    chunks = [b"Hel", b"lo \xf0\x9f", b"\xa4\x96 world"]  # a character split across chunks
    assert cli.relay(iter(chunks), out) is None
    assert out.flushed == ["Hel", "Hello ", "Hello 🤖 world"]


@pytest.mark.parametrize(
    ("chunks", "printed", "error"),
    [
        (
            [b"partial reply", b"\n[error: The connection to the model broke.]"],
            "partial reply",
            "The connection to the model broke.",
        ),
        ([b"partial\n[err", b"or: The model stopped.]"], "partial", "The model stopped."),
        ([b"two\nlines"], "two\nlines", None),
        ([b"ends with\n", b"[a bracket]"], "ends with\n[a bracket]", None),
    ],
)
def test_the_in_band_error_goes_to_stderr_not_the_reply(
    chunks: list[bytes], printed: str, error: str | None
) -> None:
    out = io.StringIO()
    assert cli.relay(iter(chunks), out) == error
    assert out.getvalue() == printed


@responses.activate
def test_an_in_band_error_exits_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    responses.post(STREAM, body=b"Hello\n[error: The connection to the model broke.]")
    assert run("hi") == 1
    assert capsys.readouterr() == ("Hello\n", "chat: The connection to the model broke.\n")


@responses.activate
def test_no_stream_prints_the_whole_reply(capsys: pytest.CaptureFixture[str]) -> None:
    responses.post(WHOLE, json={"reply": "All at once.", "model": "m", "usage": None, "request_id": "r"})
    assert run("--no-stream", "hi") == 0
    assert capsys.readouterr().out == "All at once.\n"


@responses.activate
@pytest.mark.parametrize("status", [400, 401, 413, 429, 502, 504])
@pytest.mark.parametrize("url", [STREAM, WHOLE])
def test_error_statuses_print_the_server_sentence(
    capsys: pytest.CaptureFixture[str], status: int, url: str
) -> None:
    responses.post(url, status=status, json={"error": f"Sentence for {status}."})
    args = ["hi"] if url == STREAM else ["--no-stream", "hi"]
    assert run(*args) == 1
    assert capsys.readouterr() == ("", f"chat: Sentence for {status}.\n")


@responses.activate
def test_a_non_json_error_prints_the_status(capsys: pytest.CaptureFixture[str]) -> None:
    responses.post(STREAM, status=502, body="<html>Bad gateway</html>", content_type="text/html")
    assert run("hi") == 1
    assert capsys.readouterr().err == "chat: the server answered HTTP 502\n"


@responses.activate
def test_connection_refused(capsys: pytest.CaptureFixture[str]) -> None:
    responses.post(STREAM, body=requests.ConnectionError("refused"))
    assert run("hi") == 1
    assert capsys.readouterr().err == f"chat: cannot reach {URL}: is the server running?\n"


@responses.activate
def test_options_go_into_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_API_KEY", "from-env")
    responses.post(STREAM, body=b"ok")
    assert run("--model", "gpt-4o", "--system", "Be terse.", "hi") == 0
    assert run("--api-key", "from-flag", "hi") == 0
    first, second = (call.request for call in responses.calls)
    assert json.loads(first.body or b"") == {"message": "hi", "model": "gpt-4o", "instructions": "Be terse."}
    assert first.headers["Authorization"] == "Bearer from-env"
    assert second.headers["Authorization"] == "Bearer from-flag"


@responses.activate
def test_the_message_comes_from_stdin_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("piped in\n"))
    responses.post(STREAM, body=b"ok")
    assert run() == 0
    assert json.loads(responses.calls[0].request.body or b"") == {"message": "piped in\n"}


def test_an_empty_message_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("  \n"))
    assert run() == 2
    assert "give a message" in capsys.readouterr().err


@responses.activate
def test_ctrl_c_stops_cleanly(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(self: requests.Response, chunk_size: int | None = None) -> Iterator[bytes]:
        yield b"Hel"
        raise KeyboardInterrupt

    responses.post(STREAM, body=b"placeholder")
    monkeypatch.setattr(requests.Response, "iter_content", interrupted)
    assert run("hi") == 130
    assert capsys.readouterr().out == "Hel"


@responses.activate
@pytest.mark.parametrize(
    ("raised", "said"),
    [
        (requests.exceptions.ChunkedEncodingError("cut"), "the connection to http://chat.test broke"),
        (requests.exceptions.ReadTimeout("slow"), "http://chat.test went silent for 120 s"),
        (requests.exceptions.ConnectTimeout("no"), "cannot reach http://chat.test: it did not accept"),
    ],
)
def test_transport_failures_get_a_sentence_not_a_traceback(
    capsys: pytest.CaptureFixture[str], raised: Exception, said: str
) -> None:
    responses.post(STREAM, body=raised)
    assert run("hi") == 1
    assert said in capsys.readouterr().err


@responses.activate
def test_a_reply_that_is_not_json_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    responses.post(WHOLE, body="<html>proxy page</html>", status=200)
    assert run("--no-stream", "hi") == 1
    assert capsys.readouterr().err == "chat: http://chat.test sent an answer that could not be read\n"


def test_ctrl_c_while_reading_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    class Interrupted(io.StringIO):
        def read(self, size: int | None = -1) -> str:
            raise KeyboardInterrupt

    monkeypatch.setattr("sys.stdin", Interrupted())
    assert run() == 130
