"""The schema: the migrations build it on SQLite and Postgres, match the models, and run once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Engine, MetaData, String, inspect, text

from app import create_app
from app.settings import DEFAULTS, SettingsError
from app.store.db import MIGRATION_LOCK, MIGRATIONS, DatabaseError, make_engine, upgrade
from app.store.models import Base

from ..support import free_port, wait_until

TABLES = {"alembic_version", "conversations", "messages"}


def script_head() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, database: str) -> str:
    """An empty database of each kind (the Postgres one skips when no server can be started)."""
    if request.param == "sqlite":
        return database
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def engine(empty_url: str) -> Iterator[Engine]:
    engine = make_engine(empty_url)
    yield engine
    engine.dispose()


def versions(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())


def test_an_empty_database_is_upgraded_to_the_head(engine: Engine) -> None:
    assert inspect(engine).get_table_names() == []
    upgrade(engine)
    assert set(inspect(engine).get_table_names()) == TABLES
    assert versions(engine) == [script_head()]


def differences(engine: Engine, metadata: MetaData) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def test_the_models_match_the_migrations(engine: Engine) -> None:
    upgrade(engine)
    assert differences(engine, Base.metadata) == []


def test_a_model_change_without_a_migration_is_noticed(engine: Engine) -> None:
    # The check above can fail: a column the migrations lack is one difference.
    upgrade(engine)
    changed = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["messages"].append_column(Column("mood", String(10)))
    found = differences(engine, changed)
    assert [(diff[0], diff[3].name) for diff in found] == [("add_column", "mood")]  # type: ignore[index]


def schema(engine: Engine) -> dict[str, object]:
    """Each table's columns (name, type, nullable) and indexes, as the database describes them."""
    found = inspect(engine)
    return {
        name: (
            [(c["name"], str(c["type"]), c["nullable"]) for c in found.get_columns(name)],
            sorted((i["name"], tuple(i["column_names"]), i["unique"]) for i in found.get_indexes(name)),
        )
        for name in found.get_table_names()
    }


def test_a_second_upgrade_changes_nothing(engine: Engine) -> None:
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO conversations (id, title, created_at, updated_at)"
                " VALUES ('kept', 'Kept', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
    before = schema(engine)
    upgrade(engine)
    assert schema(engine) == before
    assert versions(engine) == [script_head()]
    with engine.connect() as connection:
        assert connection.execute(text("SELECT id, title FROM conversations")).all() == [("kept", "Kept")]


def run_app_db(database_url: str) -> subprocess.Popen[str]:
    """``python -m app.store.db`` on DATABASE_URL, as the Procfile's release line runs it."""
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS}
    return subprocess.Popen(
        [sys.executable, "-m", "app.store.db"],
        env={**env, "DATABASE_URL": database_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def waiting_for_the_migration_lock(engine: Engine) -> int:
    """How many sessions of this database wait for an advisory lock."""
    query = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def test_hosts_upgrading_at_once_create_the_schema_once(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    racers: list[subprocess.Popen[str]] = []
    try:
        # Hold the migrations' lock until all four commands wait for it, so they really run at once.
        with engine.connect() as holder:
            holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
            racers = [run_app_db(postgres_url) for _ in range(4)]

            def all_waiting() -> bool:
                assert all(racer.poll() is None for racer in racers), "an upgrade did not wait its turn"
                return waiting_for_the_migration_lock(engine) >= 4

            wait_until(all_waiting, 30, interval=0.05)
            assert waiting_for_the_migration_lock(engine) == 4
            assert inspect(engine).get_table_names() == []
            holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
        results = [(racer.wait(timeout=30), *racer.communicate()) for racer in racers]
        assert [(code, err) for code, _, err in results] == [(0, "")] * 4
        assert all(out.startswith("The database is up to date") for _, out, _ in results)
        assert set(inspect(engine).get_table_names()) == TABLES
        assert versions(engine) == [script_head()]
        assert differences(engine, Base.metadata) == []
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
            racer.communicate()
        engine.dispose()


def closed_port_url(password: str = "") -> str:
    secret = f":{password}" if password else ""
    return f"postgresql+psycopg://chat{secret}@127.0.0.1:{free_port()}/chat"


@pytest.mark.parametrize(
    ("database_url", "start"),
    [
        ("mysql://chat@localhost/chat", "error: DATABASE_URL must be a sqlite:/// path"),
        ("sqlite:///:memory:", "error: DATABASE_URL must be a sqlite:/// path"),
        (closed_port_url("pa55-word"), "error: The database in DATABASE_URL could not be reached"),
    ],
    ids=["not-sqlite-or-postgres", "in-memory", "closed-port"],
)
def test_the_command_stops_with_one_sentence(database_url: str, start: str) -> None:
    done = run_app_db(database_url)
    code = done.wait(timeout=30)
    out, err = done.communicate()
    assert (code, out) == (1, "")
    assert err.startswith(start), err
    assert err.endswith(".\n") and err.count("\n") == 1, err
    assert "Traceback" not in err and "pa55-word" not in err


def test_the_command_stops_with_one_sentence_when_the_folder_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    done = run_app_db(f"sqlite:///{tmp_path}/file/chat.db")
    code = done.wait(timeout=30)
    _, err = done.communicate()
    assert code == 1
    assert err.startswith("error: The folder for DATABASE_URL's SQLite file") and err.count("\n") == 1, err


def test_the_app_does_not_start_on_an_unreachable_database() -> None:
    url = closed_port_url("pa55-word")
    with pytest.raises(DatabaseError) as caught:
        create_app({"TESTING": True, "DATABASE_URL": url})
    message = str(caught.value)
    assert isinstance(caught.value, SettingsError)
    assert message.startswith("The database in DATABASE_URL could not be reached or brought up to date: ")
    assert "Connection refused" in message and message.endswith(".") and "\n" not in message
    assert "pa55-word" not in message
