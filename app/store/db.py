"""The database: an engine for DATABASE_URL, and its schema brought up to date by the migrations.

``python -m app.store.db`` applies the migrations by hand (the Procfile's ``release:`` line runs it,
and so does gunicorn's master before it starts any worker); the app checks them at start-up
and applies any still missing (when it runs without gunicorn: the tests, ``flask run``).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..settings import SettingsError

MIGRATIONS = Path(__file__).with_name("migrations")
BUSY_TIMEOUT_S = 5.0  # how long SQLite waits for another worker's write before giving up
CONNECT_TIMEOUT_S = 10  # how long a Postgres connection may take to be made
# pg_advisory_xact_lock's key for migrations: any number, the same on every host.
MIGRATION_LOCK = 7_263_617_106_964


class DatabaseError(SettingsError):
    """The database cannot be reached or brought up to date: the service cannot start."""


def make_engine(url: str) -> Engine:
    """An engine whose transactions are short and safe for several workers and hosts.

    SQLite: WAL (readers never wait for the writer), a busy timeout, and write transactions
    that take the lock when they begin (``BEGIN IMMEDIATE``), so two workers never deadlock
    upgrading a read lock, which the busy timeout cannot resolve.
    """
    # hide_parameters: an error's text (logged) never quotes a user's message or a reply.
    if not url.startswith("sqlite"):
        # A server that takes the connection and never answers must not hang start-up or a turn.
        return create_engine(
            url, pool_pre_ping=True, hide_parameters=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S}
        )
    engine = create_engine(url, hide_parameters=True, connect_args={"timeout": BUSY_TIMEOUT_S})
    folder = Path(engine.url.database or "").parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DatabaseError(
            f"The folder for DATABASE_URL's SQLite file, {folder}, cannot be made: {error.strerror}."
        ) from None

    @event.listens_for(engine, "connect")
    def on_connect(connection: Any, _record: Any) -> None:
        connection.isolation_level = None  # the driver's own BEGIN would be deferred
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; fsync at checkpoints
        connection.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(engine, "begin")
    def on_begin(connection: Connection) -> None:
        # Readers (see ``reading``) take no lock: under WAL they never wait for a writer.
        reads = connection.get_execution_options().get("reading", False)
        connection.exec_driver_sql("BEGIN" if reads else "BEGIN IMMEDIATE")

    return engine


@contextlib.contextmanager
def reading(db: sessionmaker[Session]) -> Iterator[Session]:
    """A session that only reads: on SQLite it never takes the write lock, so it never waits."""
    with db() as session:
        session.connection(execution_options={"reading": True})
        yield session


@contextlib.contextmanager
def transaction(db: sessionmaker[Session], reads_only: bool = False) -> Iterator[Connection]:
    """A transaction on a plain connection of ``db``'s engine, for Core statements on the hot path
    (a turn's start and end, checkpoints): an ORM session around them cost as much as running them
    (cProfile under gevent). ``reads_only``: on SQLite it never takes the write lock."""
    engine: Engine = db.kw["bind"]
    with engine.connect() as connection:
        if reads_only:
            connection = connection.execution_options(reading=True)
        with connection.begin():
            yield connection


def sessions(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (they are turned into JSON after it)."""
    return sessionmaker(engine, expire_on_commit=False)


def upgrade(engine: Engine) -> None:
    """Apply the migrations not yet applied, one host or worker at a time; or DatabaseError.

    The check and the upgrade run in one transaction under a lock (Postgres: an advisory
    lock; SQLite: its write lock), so hosts starting together upgrade once, in turn.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        if current(engine) == ScriptDirectory.from_config(config).get_current_head():
            return  # the usual start of a worker: the master brought it up to date
        with engine.connect() as connection, connection.begin():
            if engine.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except SQLAlchemyError as error:
        raise DatabaseError(
            f"The database in DATABASE_URL could not be reached or brought up to date: {reason(error)}"
        ) from None


def current(engine: Engine) -> str | None:
    """The revision the database is at (None when it has no schema yet)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def reason(error: SQLAlchemyError) -> str:
    """The driver's first line (which names the host or file, never the password)."""
    original = getattr(error, "orig", None) or error
    line = str(original).strip().splitlines()[0] if str(original).strip() else type(original).__name__
    return line[:300].rstrip(".") + "."


def main() -> int:
    """``python -m app.store.db``: bring the database in DATABASE_URL (or .env) up to date."""
    from dotenv import load_dotenv

    from ..settings import load_settings

    load_dotenv()  # fills in what the environment lacks, as wsgi.py does
    import os

    try:
        engine = make_engine(load_settings(os.environ)["DATABASE_URL"])
        upgrade(engine)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    engine.dispose()
    print(f"The database is up to date ({engine.url.render_as_string()}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
