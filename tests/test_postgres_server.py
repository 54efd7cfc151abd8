from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, inspect, text

from .support.postgres import PostgresServer


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_engine(postgres_url)
    yield engine
    engine.dispose()


def test_a_table_keeps_what_is_written_to_it(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)"))
        conn.execute(text("INSERT INTO notes (body) VALUES (:body)"), [{"body": "héllo ✓"}, {"body": "two"}])
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, body FROM notes ORDER BY id")).all()
    assert [tuple(row) for row in rows] == [(1, "héllo ✓"), (2, "two")]


def test_the_server_speaks_utf8_on_loopback_only(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(text("SHOW server_encoding")).scalar() == "UTF8"
        assert conn.execute(text("SHOW listen_addresses")).scalar() == "127.0.0.1"


def test_each_database_starts_empty_and_apart(postgres_server: PostgresServer, engine: Engine) -> None:
    assert inspect(engine).get_table_names() == []
    other = create_engine(postgres_server.new_database())
    try:
        assert other.url != engine.url
        with other.begin() as conn:
            conn.execute(text("CREATE TABLE only_here (id int)"))
        assert inspect(other).get_table_names() == ["only_here"]
        assert inspect(engine).get_table_names() == []
    finally:
        other.dispose()
        postgres_server.drop_database(str(other.url))


def test_stop_leaves_no_server_and_no_folder(postgres_server: PostgresServer) -> None:
    server = PostgresServer()  # its own, to stop; the session's server says whether one can start
    try:
        pid = int((server.data / "postmaster.pid").read_text().split()[0])
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    finally:
        server.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2)
    assert not server.dir.exists()
    assert not is_running(pid)


def is_running(pid: int) -> bool:
    """Whether a process is alive (an exited one that its parent has yet to reap is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")
