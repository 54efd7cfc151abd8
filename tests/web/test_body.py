from __future__ import annotations

import io
import json
import logging
import time

import pytest
from flask.testing import FlaskClient

from app import create_app

MIB = 1024 * 1024
ROUTES = ["/api/chat", "/api/chat/stream"]


def body_of(size: int) -> bytes:
    """A chat body of exactly ``size`` bytes."""
    head = b'{"message": "hi", "pad": "'
    return head + b"a" * (size - len(head) - 2) + b'"}'


class Chunked(io.RawIOBase):
    """A body without a length, as a chunked one reaches the app: read until it ends."""

    def __init__(self, data: bytes, pause_s: float = 0.0, piece: int = MIB) -> None:
        self.data = io.BytesIO(data)
        self.pause_s = pause_s
        self.piece = piece

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        time.sleep(self.pause_s)
        return self.data.read(min(self.piece, size if size >= 0 else self.piece))


class Malformed(io.RawIOBase):
    """What the server's parser does with a bad chunk size: it raises an error of its own."""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        raise ValueError("Invalid chunk size: 'zz'")  # like gunicorn's InvalidChunkSize


def post_chunked(client: FlaskClient, route: str, stream: io.RawIOBase) -> tuple[int, dict[str, str]]:
    environ = {"wsgi.input": stream, "wsgi.input_terminated": True}
    headers = {"Transfer-Encoding": "chunked"}
    response = client.post(route, content_type="application/json", headers=headers, environ_overrides=environ)
    return response.status_code, response.get_json(silent=True) or {}


@pytest.mark.parametrize("route", ROUTES)
def test_a_body_of_exactly_one_mebibyte_is_read_and_one_byte_more_is_413(
    client: FlaskClient, route: str
) -> None:
    assert client.post(route, data=body_of(MIB), content_type="application/json").status_code == 200
    over = client.post(route, data=body_of(MIB + 1), content_type="application/json")
    assert over.status_code == 413
    assert over.get_json() == {"error": "The request body is larger than the 1 MiB limit."}


@pytest.mark.parametrize("route", ROUTES)
def test_a_chunked_body_of_exactly_one_mebibyte_is_read_and_one_byte_more_is_413(
    client: FlaskClient, route: str
) -> None:
    assert post_chunked(client, route, Chunked(body_of(MIB), piece=4096))[0] == 200
    status, body = post_chunked(client, route, Chunked(body_of(MIB + 1), piece=4096))
    assert status == 413
    assert body == {"error": "The request body is larger than the 1 MiB limit."}


def test_a_body_that_does_not_arrive_in_time_gets_408() -> None:
    settings = {"TESTING": True, "DEMO_DELAY_MS": "0", "REQUEST_BODY_TIMEOUT_S": "0.3"}
    client = create_app(settings).test_client()
    slow = Chunked(json.dumps({"message": "hi"}).encode(), pause_s=0.1, piece=2)
    status, body = post_chunked(client, "/api/chat", slow)
    assert status == 408
    assert body == {"error": "The request body did not arrive within 0.3 seconds."}


def test_a_large_body_arriving_steadily_within_the_time_is_read() -> None:
    client = create_app({"TESTING": True, "DEMO_DELAY_MS": "0", "REQUEST_BODY_TIMEOUT_S": "2"}).test_client()
    steady = Chunked(body_of(MIB), pause_s=0.02, piece=64 * 1024)  # 16 pieces, about 0.3 s
    assert post_chunked(client, "/api/chat", steady)[0] == 200


def test_a_client_that_leaves_mid_body_is_logged_499(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.access")
    environ = {"CONTENT_LENGTH": "100", "wsgi.input": io.BytesIO(b'{"mess')}  # then the connection ended
    response = client.post(
        "/api/chat", content_type="application/json", environ_overrides=environ, buffered=True
    )
    assert response.status_code == 499
    fields = caplog.records[-1].fields  # type: ignore[attr-defined]
    assert (fields["status"], fields["outcome"]) == (499, "disconnected")


@pytest.mark.parametrize("route", ROUTES)
def test_malformed_chunked_framing_is_400_without_an_error_line(
    client: FlaskClient, caplog: pytest.LogCaptureFixture, route: str
) -> None:
    status, body = post_chunked(client, route, Malformed())
    assert status == 400
    assert body == {"error": "The request body's chunked encoding is malformed."}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_chunked_body_without_its_end_marker_is_no_body(client: FlaskClient) -> None:
    # WSGI: no length and no wsgi.input_terminated means the app must not read the input.
    environ = {"wsgi.input": Malformed()}
    response = client.post("/api/chat", content_type="application/json", environ_overrides=environ)
    assert response.status_code == 400
    assert response.get_json() == {"error": "The request body is not valid JSON."}
