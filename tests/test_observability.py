from __future__ import annotations

import json
import logging
import time

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.observability import JsonFormatter, access_text, configure_logging
from app.upstream.demo import pieces

from .conftest import SECRET_KEY, FakeLLM
from .fake_upstream import FakeUpstream, Script

ASK = {"message": "Tell me a secret about zebras"}


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "app.access"]


def test_one_access_line_per_request_with_the_spec_fields(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = client.post("/api/chat/stream", json=ASK, headers={"X-Request-ID": "req-42"}, buffered=True)
    body = response.get_data(as_text=True)
    [record] = access_records(caplog)
    fields = record.fields  # type: ignore[attr-defined]
    assert list(fields) == [
        "method",
        "path",
        "status",
        "duration_ms",
        "ttft_ms",
        "chunks",
        "chars",
        "tokens_out",
        "outcome",
        "request_id",
        "framing",
        "reasoning_chars",
    ]
    assert fields["method"] == "POST" and fields["path"] == "/api/chat/stream" and fields["status"] == 200
    assert fields["chars"] == len(body)
    assert fields["chunks"] == fields["tokens_out"] == len(pieces(body))
    assert fields["outcome"] == "complete"
    assert fields["request_id"] == "req-42" == response.headers["X-Request-ID"]
    assert 0 <= fields["ttft_ms"] <= fields["duration_ms"]
    message = record.getMessage()
    assert message.startswith("POST /api/chat/stream 200 duration_ms=")
    assert f" chunks={fields['chunks']} chars={fields['chars']} " in message
    assert message.endswith(" outcome=complete request_id=req-42 framing=text reasoning_chars=0")


def test_the_access_line_waits_for_the_stream_to_end(
    client: FlaskClient, fake_llm: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = client.post("/api/chat/stream", json=ASK, buffered=False)
    assert access_records(caplog) == []  # the view has returned; the body has not been sent
    chunks = list(response.response)
    assert access_records(caplog) == []  # read to its end, not closed: only close() writes it
    time.sleep(0.05)  # the duration runs until the close
    response.close()
    [record] = access_records(caplog)
    assert chunks == [b"Hi", b" there"]
    assert record.fields["duration_ms"] >= 50  # type: ignore[attr-defined]
    assert record.fields["outcome"] == "complete"  # type: ignore[attr-defined]


def test_a_client_that_leaves_is_logged_as_disconnected(
    openai_client: FlaskClient, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    upstream.script = Script(stall_after=2)
    response = openai_client.post("/api/chat/stream", json=ASK, buffered=False)
    body = iter(response.response)
    assert next(body) + next(body) == b"Hello,"
    response.close()
    [record] = access_records(caplog)
    assert record.fields["outcome"] == "disconnected"  # type: ignore[attr-defined]
    assert record.fields["chunks"] == 2  # type: ignore[attr-defined]
    assert record.fields["tokens_out"] is None  # type: ignore[attr-defined]
    assert "tokens_out=- outcome=disconnected" in record.getMessage()


def test_failures_are_logged_with_outcome_error_and_a_reason(
    openai_client: FlaskClient, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    upstream.script = Script(status=500)
    openai_client.post("/api/chat/stream", json=ASK, buffered=True)
    upstream.script = Script(cut_after=1)
    openai_client.post("/api/chat/stream", json=ASK, buffered=True)
    openai_client.post("/api/chat", json=ASK, buffered=True)
    openai_client.post("/api/chat", json={"message": ""}, buffered=True)
    early, late, whole, invalid = (r.fields for r in access_records(caplog))  # type: ignore[attr-defined]
    assert (early["status"], early["outcome"], early["reason"]) == (502, "error", "upstream_status")
    assert (late["status"], late["outcome"], late["reason"]) == (200, "error", "upstream_broken")
    assert (whole["status"], whole["outcome"], whole["reason"]) == (502, "error", "upstream_broken")
    assert (invalid["status"], invalid["outcome"]) == (400, "error")


def test_every_route_gets_one_line(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    client.get("/healthz", buffered=True)
    client.get("/missing", buffered=True)
    client.post("/api/chat", json=ASK, buffered=True)
    lines = [r.getMessage() for r in access_records(caplog)]
    assert [line.split(" ")[:3] for line in lines] == [
        ["GET", "/healthz", "200"],
        ["GET", "/missing", "404"],
        ["POST", "/api/chat", "200"],
    ]
    assert "outcome=complete" in lines[0] and "outcome=error" in lines[1]


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [
        ("abc-123", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("has space", False),
        ("tab\there", False),
        ("ünïcode", False),
        ("", False),
        ("A.b_c-9", True),
        ("<script>alert(1)</script>", False),
        ("a/b", False),
        ("a;b=c", False),
        ('"quoted"', False),
    ],
)
def test_incoming_request_ids_are_kept_only_when_short_and_printable(
    client: FlaskClient, incoming: str, kept: bool
) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": incoming})
    request_id = response.headers["X-Request-ID"]
    if kept:
        assert request_id == incoming
    else:
        assert request_id != incoming and len(request_id) == 32 and request_id.isalnum()


def test_json_lines_carry_the_same_keys() -> None:
    record = logging.LogRecord("app.access", logging.INFO, __file__, 1, "ignored", None, None)
    fields = {"method": "POST", "path": "/api/chat", "status": 200, "duration_ms": 1.5, "outcome": "complete"}
    record.fields = fields
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "INFO" and entry["logger"] == "app.access"
    assert {k: entry[k] for k in fields} == fields
    plain = logging.LogRecord("app", logging.WARNING, __file__, 1, "hello %s", ("there",), None)
    assert json.loads(JsonFormatter().format(plain))["message"] == "hello there"


def test_a_json_line_carries_a_bugs_traceback_on_one_line() -> None:
    try:
        {}["missing"]
    except KeyError as error:
        record = logging.LogRecord(
            "app",
            logging.ERROR,
            __file__,
            1,
            "unhandled KeyError",
            None,
            (KeyError, error, error.__traceback__),
        )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "unhandled KeyError"
    assert entry["traceback"].startswith("Traceback (most recent call last):")
    assert entry["traceback"].rstrip().endswith("KeyError: 'missing'")


def test_text_lines_render_missing_values_as_a_dash() -> None:
    line = access_text({"method": "GET", "path": "/", "status": 200, "ttft_ms": None, "outcome": "complete"})
    assert line == "GET / 200 ttft_ms=- outcome=complete"


def test_configure_logging_installs_one_handler(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        configure_logging("INFO", "json")
        configure_logging("INFO", "json")
        ours = [h for h in root.handlers if h.get_name() == "app"]
        assert len(ours) == 1
        assert logging.getLogger("httpx2").level == logging.WARNING
        logging.getLogger("app.test").info("one line")
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert json.loads(line)["message"] == "one line"
    finally:
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)
        root.setLevel(logging.WARNING)


def test_no_secret_or_message_text_is_logged_at_info(
    make_openai_app: Flask, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture, api: str
) -> None:
    caplog.set_level(logging.INFO)
    client = make_openai_app(OPENAI_API=api).test_client()  # type: ignore[operator]
    auth = {"Authorization": "Bearer client-SENTINEL-token"}
    for script in (Script(), Script(status=401, error_message=f"bad key {SECRET_KEY}"), Script(cut_after=1)):
        upstream.script = script
        client.post("/api/chat/stream", json=ASK, headers=auth, buffered=True)
        client.post("/api/chat", json=ASK, headers=auth, buffered=True)
    client.post("/api/chat", json={"message": "zebras", "temperature": 9}, headers=auth, buffered=True)
    text = "\n".join(f"{r.name} {r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert len(access_records(caplog)) == 7
    for secret in (SECRET_KEY, SECRET_KEY[:12], "client-SENTINEL-token", "zebras"):
        assert secret not in text


def test_a_path_cannot_forge_a_log_line(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    client.get("/x%0aPOST%20/api/chat/stream%20200%20outcome=complete", buffered=True)
    [record] = access_records(caplog)
    message = record.getMessage()
    assert "\n" not in message and message.startswith("GET /x%0APOST%20/api/chat/stream%20200")
    assert record.fields["path"] == "/x%0APOST%20/api/chat/stream%20200%20outcome=complete"  # type: ignore[attr-defined]


def test_an_unexpected_error_on_the_json_route_is_an_error_outcome(
    client: FlaskClient, fake_llm: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake_llm.fail_after = 1
    fake_llm.error = KeyError("surprise")
    assert client.post("/api/chat", json=ASK, buffered=True).status_code == 500
    [record] = access_records(caplog)
    assert (record.fields["outcome"], record.fields["reason"]) == ("error", "internal")  # type: ignore[attr-defined]
