from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses
from hypothesis import given
from hypothesis import strategies as st

from app import cli

URL = "http://chat.test"
STREAM = f"{URL}/api/chat/stream"
WHOLE = f"{URL}/api/chat"
CONVERSATIONS = f"{URL}/api/conversations"
METADATA = {"type": "metadata", "request_id": "r1", "model": "m", "conversation_id": None, "message_id": None}
DONE = {"type": "done", "usage": {"input_tokens": 9, "output_tokens": 3}}


def run(*argv: str) -> int:
    return cli.main(["--url", URL, *argv])


def sse(*events: dict[str, Any]) -> bytes:
    """Events framed as the server frames them: JSON in UTF-8, one data line each."""
    return b"".join(b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n" for event in events)


def tokens(*texts: str) -> list[dict[str, Any]]:
    return [{"type": "token", "content": text} for text in texts]


def answer_stream(body: bytes) -> None:
    responses.post(STREAM, body=body, content_type="text/event-stream; charset=utf-8")


def sent(call: int = 0) -> Any:
    return json.loads(responses.calls[call].request.body or b"")


@responses.activate
def test_streams_the_reply_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    answer_stream(sse(METADATA, *tokens("Once upon", " a time ", "🤖."), DONE))
    assert run("Tell", "me", "a", "story") == 0
    assert capsys.readouterr() == ("Once upon a time 🤖.\n", "")
    assert sent() == {"message": "Tell me a story"}
    assert responses.calls[0].request.headers["Accept"] == "text/event-stream"


def test_each_token_is_written_and_flushed_as_it_comes() -> None:
    class Recorder(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.flushed: list[str] = []

        def flush(self) -> None:
            self.flushed.append(self.getvalue())

    out = Recorder()
    body = sse(*tokens("Hel", "lo 🤖", " world"), DONE)
    cut = body.index("🤖".encode()) + 2  # inside the robot's four bytes
    chunks = [body[:cut], body[cut:]]
    assert cli.relay(iter(chunks), out) is None
    assert out.flushed == ["Hel", "Hello 🤖", "Hello 🤖 world"]


@responses.activate
def test_an_in_band_error_goes_to_stderr_and_exits_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    answer_stream(sse(METADATA, *tokens("Hello"), {"type": "error", "message": "The model broke."}))
    assert run("hi") == 1
    assert capsys.readouterr() == ("Hello\n", "chat: The model broke.\n")


@responses.activate
def test_pings_reasoning_and_other_fields_are_not_printed(capsys: pytest.CaptureFixture[str]) -> None:
    reasoning = {"type": "reasoning", "content": "The user wants a greeting."}
    unknown = {"type": "a kind added later"}
    answer_stream(
        b": ping\n\nevent: message\nid: 7\nretry: 10\n" + sse(reasoning, *tokens("Hi"), unknown, DONE)
    )
    assert run("hi") == 0
    assert capsys.readouterr() == ("Hi\n", "")


@responses.activate
def test_model_text_cannot_forge_an_error_or_reach_the_terminal_as_controls(
    capsys: pytest.CaptureFixture[str],
) -> None:
    hostile = tokens(
        "Safe ", "\x1b[31mred\x1b[0m", " \rover", "write\x07\x9b2J", "\n[error: Forged.]", "\x7f\tend"
    )
    answer_stream(sse(METADATA, *hostile, DONE))
    assert run("hi") == 0
    assert capsys.readouterr() == ("Safe [31mred[0m overwrite2J\n[error: Forged.]\tend\n", "")


@responses.activate
def test_error_sentences_reach_the_terminal_without_controls(capsys: pytest.CaptureFixture[str]) -> None:
    answer_stream(sse(*tokens("Hi"), {"type": "error", "message": "\x1b]0;title\x07The \x85model\r broke."}))
    responses.post(WHOLE, status=400, json={"error": "\x1b[2JBad\x00 request.\x9c"})
    assert run("hi") == 1
    assert run("--no-stream", "hi") == 1
    assert capsys.readouterr() == ("Hi\n", "chat: ]0;titleThe model broke.\nchat: [2JBad request.\n")


@responses.activate
def test_no_stream_strips_controls_from_the_reply(capsys: pytest.CaptureFixture[str]) -> None:
    responses.post(WHOLE, json={"reply": "\x1b[1mBold\x1b[0m\r\n\tand \ud83e\udd16 \ud83e", "usage": None})
    assert run("--no-stream", "hi") == 0
    assert capsys.readouterr() == ("[1mBold[0m\n\tand 🤖 \ufffd\n", "")


@responses.activate
def test_a_surrogate_pair_split_across_tokens_is_joined(capsys: pytest.CaptureFixture[str]) -> None:
    escaped = [b"robot \\ud83e", b"\\udd16!", b" \\udd16 \\ud83e"]  # as the server escapes half a pair
    answer_stream(
        b"".join(b'data: {"type": "token", "content": "%s"}\n\n' % text for text in escaped) + sse(DONE)
    )
    assert run("hi") == 0
    assert capsys.readouterr() == ("robot 🤖! \ufffd \n", "")


def is_control(char: str) -> bool:
    return (ord(char) < 0x20 and char not in "\n\t") or 0x7F <= ord(char) < 0xA0


@given(st.text(st.characters(exclude_categories=())))  # surrogates too
def test_printable_text_holds_no_control_but_newline_and_tab(text: str) -> None:
    shown = cli.printable(text)
    shown.encode()  # raises for a lone surrogate
    assert not any(is_control(char) for char in shown)
    if not any("\ud800" <= char <= "\udfff" for char in text):
        assert shown == "".join(char for char in text if not is_control(char))


@responses.activate
@pytest.mark.parametrize(
    "body",
    [
        sse(METADATA, *tokens("Half a")),
        sse(METADATA, *tokens("Half a")) + b'data: {"type": "done"',  # the last event never ended
        b"",
    ],
)
def test_a_stream_without_its_end_is_a_broken_connection(
    capsys: pytest.CaptureFixture[str], body: bytes
) -> None:
    answer_stream(body)
    assert run("hi") == 1
    assert capsys.readouterr().err == f"\nchat: the connection to {URL} broke before the reply was complete\n"


@responses.activate
@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"Plain text, not events", "text/plain; charset=utf-8"),
        (b"data: not json\n\n", "text/event-stream"),
        (b'data: ["a list"]\n\n', "text/event-stream"),
        (b'data: {"type": "token", "content": 3}\n\n', "text/event-stream"),
    ],
)
def test_a_stream_that_cannot_be_read_is_reported(
    capsys: pytest.CaptureFixture[str], body: bytes, content_type: str
) -> None:
    responses.post(STREAM, body=body, content_type=content_type)
    assert run("hi") == 1
    assert capsys.readouterr() == ("", f"chat: {URL} sent an answer that could not be read\n")


def parse(chunks: list[bytes]) -> list[str]:
    return list(cli.events(cli.lines(chunks)))


@pytest.mark.parametrize(
    ("body", "data"),
    [
        (b"data: one\n\ndata: two\n\n", ["one", "two"]),
        (b"data: one\r\n\r\ndata: two\r\rdata: three\r\n\n", ["one", "two", "three"]),
        (b"data: first\ndata:second\ndata\ndata:  indented\n\n", ["first\nsecond\n\n indented"]),
        (b"data: kept\n: a comment\nid: 1\nevent: x\n\n", ["kept"]),
        (b"\n\n: ping\n\nevent: only\n\n", []),  # blank lines and events without data dispatch nothing
        (b"\xef\xbb\xbfdata: after a BOM\n\n", ["after a BOM"]),
        (b"data: \xff bad byte\n\n", ["\ufffd bad byte"]),
        (b"data: unfinished\n", []),
        (b"data: ends with CR\r\r", ["ends with CR"]),
    ],
)
def test_event_stream_rules(body: bytes, data: list[str]) -> None:
    assert parse([body]) == data
    assert parse([body[i : i + 1] for i in range(len(body))]) == data


STREAM_WITH_EVERYTHING = (
    b"\xef\xbb\xbf: ping\r\n\r\n"
    + b'data: {"type": "token",\r\ndata:  "content": "caf\xc3\xa9 \xf0\x9f\xa4\x96"}\r\n\r\n'
    + b'event: token\rid: 2\rdata: {"type": "token", "content": "\xe2\x82\xac"}\r\r'
    + b'data: {"type": "done", "usage": null}\n\n'
)


@pytest.mark.parametrize("cut", range(len(STREAM_WITH_EVERYTHING) + 1))
def test_a_stream_cut_at_any_byte_gives_the_same_events(cut: int) -> None:
    whole = parse([STREAM_WITH_EVERYTHING])
    assert [json.loads(data) for data in whole] == [*tokens("café 🤖", "€"), {"type": "done", "usage": None}]
    assert parse([STREAM_WITH_EVERYTHING[:cut], STREAM_WITH_EVERYTHING[cut:]]) == whole


@st.composite
def framed_events(draw: st.DrawFn) -> tuple[bytes, list[Any]]:
    """A valid event stream in any of the allowed framings, and the events it holds."""
    events = draw(st.lists(st.builds(lambda text: {"type": "token", "content": text}, st.text()), max_size=5))
    body = b""
    for event in events:
        end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
        extra = draw(st.sampled_from(["", ": ping", "event: token", "id: 1"]))
        data = json.dumps(event, ensure_ascii=False, indent=draw(st.sampled_from([None, 1])))
        lines = [extra] if extra else []
        lines += [f"data:{draw(st.sampled_from(['', ' ']))}{line}" for line in data.split("\n")]
        body += (end.join(lines) + end + end).encode()
    return body, events


@given(framed_events(), st.data())
def test_events_survive_any_cuts(stream: tuple[bytes, list[Any]], data: st.DataObject) -> None:
    body, events = stream
    cuts = sorted(data.draw(st.sets(st.integers(0, len(body)))))
    chunks = [body[start:end] for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert [json.loads(text) for text in parse(chunks)] == events


@responses.activate
def test_no_stream_prints_the_whole_reply(capsys: pytest.CaptureFixture[str]) -> None:
    responses.post(WHOLE, json={"reply": "All at once.", "model": "m", "usage": None, "request_id": "r"})
    assert run("--no-stream", "hi") == 0
    assert capsys.readouterr().out == "All at once.\n"


@responses.activate
@pytest.mark.parametrize("status", [400, 401, 404, 409, 413, 429, 502, 504])
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
    answer_stream(sse(DONE))
    assert run("--model", "gpt-4o", "--system", "Be terse.", "hi") == 0
    assert run("--api-key", "from-flag", "hi") == 0
    first, second = (call.request for call in responses.calls)
    assert sent(0) == {"message": "hi", "model": "gpt-4o", "instructions": "Be terse."}
    assert first.headers["Authorization"] == "Bearer from-env"
    assert second.headers["Authorization"] == "Bearer from-flag"


def answer_both_routes(reply: str) -> None:
    answer_stream(sse(METADATA, *tokens(reply), DONE))
    responses.post(WHOLE, json={"reply": reply, "model": "m", "usage": None, "request_id": "r"})


@responses.activate
@pytest.mark.parametrize("framing", [[], ["--no-stream"]])
def test_conversation_sends_a_turn_of_it(capsys: pytest.CaptureFixture[str], framing: list[str]) -> None:
    answer_both_routes("Yes.")
    assert run(*framing, "--conversation", "c1", "And then?") == 0
    assert run(*framing, "--conversation", "c1", "--model", "gpt-4o", "--system", "Be terse.", "Sure?") == 0
    assert capsys.readouterr() == ("Yes.\nYes.\n", "")
    assert sent(0) == {"message": "And then?", "conversation_id": "c1"}
    assert sent(1) == {
        "message": "Sure?",
        "conversation_id": "c1",
        "model": "gpt-4o",
        "instructions": "Be terse.",
    }
    assert {call.request.url for call in responses.calls} == {WHOLE if framing else STREAM}


@responses.activate
@pytest.mark.parametrize("framing", [[], ["--no-stream"]])
def test_new_starts_a_conversation_then_sends_the_message_in_it(
    capsys: pytest.CaptureFixture[str], framing: list[str]
) -> None:
    responses.post(CONVERSATIONS, status=201, json={"id": "c9", "title": None, "messages": []})
    answer_both_routes("Hello.")
    assert run(*framing, "--new", "--api-key", "k", "--model", "gpt-4o", "--system", "Be terse.", "Hi") == 0
    assert capsys.readouterr() == ("Hello.\n", "conversation: c9\n")
    create, turn = (call.request for call in responses.calls)
    assert (create.url, turn.url) == (CONVERSATIONS, WHOLE if framing else STREAM)
    assert sent(0) == {"model": "gpt-4o", "instructions": "Be terse."}
    assert sent(1) == {"message": "Hi", "conversation_id": "c9"}
    assert create.headers["Authorization"] == turn.headers["Authorization"] == "Bearer k"


@responses.activate
def test_new_without_options_sends_an_empty_object(capsys: pytest.CaptureFixture[str]) -> None:
    responses.post(CONVERSATIONS, status=201, json={"id": "c\x1b[31m9\r"})
    answer_both_routes("Hello.")
    assert run("--new", "Hi") == 0
    assert sent(0) == {}
    assert capsys.readouterr().err == "conversation: c[31m9\n"  # no control reaches the terminal


@responses.activate
def test_a_turn_refused_in_a_conversation_prints_the_server_sentence(
    capsys: pytest.CaptureFixture[str],
) -> None:
    responses.post(STREAM, status=404, json={"error": "There is no conversation 'gone'."})
    responses.post(STREAM, status=409, json={"error": "A reply is still being written in this conversation."})
    responses.post(CONVERSATIONS, status=201, json={"id": "c9"})
    assert run("--conversation", "gone", "hi") == 1
    assert run("--new", "hi") == 1  # the conversation was made: its id is still worth knowing
    assert capsys.readouterr() == (
        "",
        "chat: There is no conversation 'gone'.\n"
        "conversation: c9\nchat: A reply is still being written in this conversation.\n",
    )


def test_new_and_conversation_together_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run("--new", "--conversation", "c1", "hi")
    assert exited.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


@responses.activate
@pytest.mark.parametrize("status", [400, 401, 404, 429, 500])
def test_a_conversation_that_cannot_be_started_prints_the_server_sentence(
    capsys: pytest.CaptureFixture[str], status: int
) -> None:
    responses.post(CONVERSATIONS, status=status, json={"error": f"Sentence for {status}."})
    assert run("--new", "hi") == 1
    assert capsys.readouterr() == ("", f"chat: Sentence for {status}.\n")
    assert len(responses.calls) == 1  # no turn is sent


@responses.activate
@pytest.mark.parametrize("body", [{"title": "no id"}, {"id": 7}, ["c1"]])
def test_a_started_conversation_without_an_id_is_reported(
    capsys: pytest.CaptureFixture[str], body: object
) -> None:
    responses.post(CONVERSATIONS, status=201, json=body)
    assert run("--new", "hi") == 1
    assert capsys.readouterr().err == f"chat: {URL} sent an answer that could not be read\n"
    assert len(responses.calls) == 1


@responses.activate
def test_the_message_comes_from_stdin_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("piped in\n"))
    answer_stream(sse(DONE))
    assert run() == 0
    assert sent() == {"message": "piped in\n"}


def test_an_empty_message_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("  \n"))
    assert run() == 2
    assert "give a message" in capsys.readouterr().err


@responses.activate
def test_ctrl_c_stops_cleanly(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(self: requests.Response, chunk_size: int | None = None) -> Iterator[bytes]:
        yield sse(*tokens("Hel"))
        raise KeyboardInterrupt

    answer_stream(b"placeholder")
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
@pytest.mark.parametrize("body", ["<html>proxy page</html>", '{"no": "reply"}', '["a list"]', '{"reply": 3}'])
def test_a_reply_that_is_not_json_is_reported(capsys: pytest.CaptureFixture[str], body: str) -> None:
    responses.post(WHOLE, body=body, status=200)
    assert run("--no-stream", "hi") == 1
    assert capsys.readouterr().err == "chat: http://chat.test sent an answer that could not be read\n"


def test_ctrl_c_while_reading_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    class Interrupted(io.StringIO):
        def read(self, size: int | None = -1) -> str:
            raise KeyboardInterrupt

    monkeypatch.setattr("sys.stdin", Interrupted())
    assert run() == 130


# --- A conversation's reply is the server's: resumed where it broke, stopped on Ctrl-C ---------

TURN_METADATA = {**METADATA, "conversation_id": "c1", "message_id": "m1"}
FOLLOW = f"{CONVERSATIONS}/c1/stream"
STOP = f"{CONVERSATIONS}/c1/stop"


def numbered(*events: tuple[int, dict[str, Any]]) -> bytes:
    """Events with their ids, as a conversation's reply frames them."""
    return b"".join(
        b"id: %d\ndata: %s\n\n" % (number, json.dumps(event, ensure_ascii=False).encode())
        for number, event in events
    )


def no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.time, "sleep", lambda _s: None)


@responses.activate
def test_a_dropped_connection_is_picked_up_where_it_broke(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    no_wait(monkeypatch)
    first = sse(TURN_METADATA) + numbered((1, tokens("Once")[0]), (2, tokens(" upon")[0]))
    answer_stream(first)  # the connection ends with no done: it broke
    responses.get(FOLLOW, body=b"placeholder", status=200)  # broken again, before anything came
    rest = sse(TURN_METADATA) + numbered((3, tokens(" a time")[0]), (4, DONE | {"status": "complete"}))
    responses.get(FOLLOW, body=rest, content_type="text/event-stream")
    assert run("--conversation", "c1", "Tell me") == 0
    assert capsys.readouterr() == ("Once upon a time\n", "")
    follows = [call.request for call in responses.calls if call.request.method == "GET"]
    assert [request.headers["Last-Event-ID"] for request in follows] == ["2", "2"]


@responses.activate
def test_a_reply_that_ended_while_disconnected_is_completed_from_the_stored_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    no_wait(monkeypatch)
    answer_stream(sse(TURN_METADATA) + numbered((1, tokens("Once")[0])))
    responses.get(FOLLOW, status=204)
    stored = {"id": "m1", "role": "assistant", "content": "Once upon a time", "status": "complete"}
    responses.get(f"{CONVERSATIONS}/c1", json={"id": "c1", "messages": [stored]})
    assert run("--conversation", "c1", "Tell me") == 0
    assert capsys.readouterr() == ("Once upon a time\n", "")


@responses.activate
def test_a_connection_that_keeps_breaking_is_given_up_on(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    no_wait(monkeypatch)
    answer_stream(sse(TURN_METADATA) + numbered((1, tokens("Once")[0])))
    responses.get(FOLLOW, body=requests.ConnectionError("down"))
    assert run("--conversation", "c1", "Tell me") == 1
    assert capsys.readouterr().err.endswith(
        "the connection to http://chat.test broke before the reply was complete\n"
    )
    assert len([c for c in responses.calls if c.request.method == "GET"]) == cli.RESUME_TRIES


@responses.activate
def test_a_stateless_reply_that_breaks_is_not_resumed(capsys: pytest.CaptureFixture[str]) -> None:
    answer_stream(sse(METADATA, *tokens("Once")))
    assert run("Tell me") == 1
    assert len(responses.calls) == 1


@responses.activate
def test_ctrl_c_in_a_conversation_stops_the_reply_on_the_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(self: requests.Response, chunk_size: int | None = None) -> Iterator[bytes]:
        yield sse(TURN_METADATA) + numbered((1, tokens("Hel")[0]))
        raise KeyboardInterrupt

    answer_stream(b"placeholder")
    responses.post(STOP, json={"id": "m1", "status": "stopped", "content": "Hel"})
    monkeypatch.setattr(requests.Response, "iter_content", interrupted)
    assert run("--conversation", "c1", "hi") == 130
    assert capsys.readouterr().out == "Hel"
    assert [call.request.url for call in responses.calls][-1] == STOP


@responses.activate
def test_a_reply_stopped_elsewhere_ends_with_a_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    answer_stream(sse(TURN_METADATA) + numbered((1, tokens("Hel")[0]), (2, DONE | {"status": "stopped"})))
    assert run("--conversation", "c1", "hi") == 1
    assert capsys.readouterr() == ("Hel\n", f"chat: {cli.STOPPED}\n")


@responses.activate
def test_follow_prints_the_reply_being_written(capsys: pytest.CaptureFixture[str]) -> None:
    body = sse(TURN_METADATA) + numbered((3, tokens("Once upon")[0]), (4, tokens(" a time")[0]), (5, DONE))
    responses.get(FOLLOW, body=body, content_type="text/event-stream")
    assert run("--conversation", "c1", "--follow") == 0
    assert capsys.readouterr() == ("Once upon a time\n", "")
    assert "Last-Event-ID" not in responses.calls[0].request.headers


@responses.activate
def test_follow_with_nothing_being_written_exits_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    responses.get(FOLLOW, status=204)
    assert run("--conversation", "c1", "--follow") == 0
    assert capsys.readouterr() == ("", "")
    assert len(responses.calls) == 1


@pytest.mark.parametrize(
    "argv", [["--follow"], ["--new", "--follow"], ["--conversation", "c1", "--follow", "hi"]]
)
def test_follow_takes_a_conversation_and_no_message(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        run(*argv)
    assert exited.value.code == 2
    assert "--follow takes --conversation ID and no message" in capsys.readouterr().err


@responses.activate
def test_ctrl_c_while_waiting_for_a_whole_reply_in_a_conversation_stops_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    responses.post(STOP, json={"id": "m1", "status": "stopped", "content": ""})
    post = requests.post
    asked: list[str] = []

    def interrupted(url: str, **options: Any) -> requests.Response:
        asked.append(url)
        if url == WHOLE:
            raise KeyboardInterrupt  # Ctrl-C while the server writes the reply
        return post(url, **options)

    monkeypatch.setattr(cli.requests, "post", interrupted)
    assert run("--conversation", "c1", "--no-stream", "hi") == 130
    assert asked == [WHOLE, STOP]


@responses.activate
def test_a_resumed_reply_is_named_so_a_newer_one_is_not_taken_for_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    no_wait(monkeypatch)
    answer_stream(sse(TURN_METADATA) + numbered((1, tokens("Once")[0])))
    responses.get(FOLLOW, status=204)
    stored = {"id": "m1", "role": "assistant", "content": "Once more", "status": "complete"}
    responses.get(f"{CONVERSATIONS}/c1", json={"id": "c1", "messages": [stored]})
    assert run("--conversation", "c1", "Tell me") == 0
    [follow_call] = [
        call for call in responses.calls if call.request.method == "GET" and "/stream" in call.request.url
    ]
    assert follow_call.request.url == f"{FOLLOW}?reply=m1"
    assert capsys.readouterr().out == "Once more\n"
