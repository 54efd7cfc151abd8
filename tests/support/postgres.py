"""A throw-away PostgreSQL server for the tests: Debian's programs, a temporary cluster, loopback only."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from contextlib import suppress
from itertools import count
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from .server import free_port

SUPERUSER = "postgres"
# Anyone on loopback or the socket may connect as anyone: the cluster holds nothing but test data.
INITDB_OPTIONS = ["--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"]

# Loopback only, on our own port and socket folder. Durability is worth nothing in a cluster that
# is deleted after the tests, so nothing waits for the disk.
SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
fsync = off
synchronous_commit = off
full_page_writes = off
"""


class PostgresUnavailable(RuntimeError):
    """No server could be started; the message says why, for a test to skip with."""


def find_bin_dir(root: Path = Path("/usr/lib/postgresql")) -> Path:
    """The bin folder of the newest PostgreSQL that Debian installed (they are not on PATH)."""
    found = [p.parent for p in root.glob("*/bin/initdb") if (p.parent / "pg_ctl").exists()]
    if not found:
        raise PostgresUnavailable(
            "PostgreSQL is not installed (make test installs Debian's postgresql as root)"
        )
    return max(found, key=lambda bin_dir: [int(n) for n in bin_dir.parent.name.split(".") if n.isdigit()])


def unprivileged_user() -> pwd.struct_passwd | None:
    """Who runs the server: PostgreSQL refuses to run as root, so root hands it to another user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresUnavailable("PostgreSQL cannot run as root and there is no postgres or nobody user")


class PostgresServer:
    """One cluster in a temporary folder, on a free loopback port, with trust authentication."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.bin_dir = find_bin_dir()
        self.user = unprivileged_user()
        self.timeout = timeout
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="postgres-test-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._names = count(1)
        self._running = False
        try:
            self._start()
            self.url = self.new_database()
        except (PostgresUnavailable, subprocess.TimeoutExpired, psycopg.Error) as error:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            self.stop()
            raise PostgresUnavailable(f"PostgreSQL did not start: {error}\n{log}".strip()) from error
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        """Make the cluster and start its server; returns once it accepts connections."""
        if self.user is not None:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        self._run("initdb", f"--pgdata={self.data}", f"--username={SUPERUSER}", *INITDB_OPTIONS)
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(SETTINGS.format(port=self.port, socket_dir=self.dir))
        self._running = True  # from here on a half-started server must be stopped too
        wait = f"--timeout={int(self.timeout)}"
        self._run("pg_ctl", "start", f"--pgdata={self.data}", f"--log={self.log}", "--wait", wait)

    def _run(self, program: str, *args: str) -> None:
        """Run one of the server's programs as the server's user; its output goes into the error."""
        options: dict[str, Any] = {}
        if self.user is not None:
            options = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # no developer's PGPORT etc.
        result = subprocess.run(
            [str(self.bin_dir / program), *args],
            cwd=self.dir,  # the server's user may not be allowed into ours
            env={**env, "LC_ALL": "C"},
            capture_output=True,
            text=True,
            timeout=self.timeout + 10,
            **options,
        )
        if result.returncode != 0:
            raise PostgresUnavailable(f"{program} failed: {(result.stdout + result.stderr).strip()}")

    def _admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=SUPERUSER,
            dbname="postgres",
            autocommit=True,
            connect_timeout=5,
        )

    def new_database(self) -> str:
        """Create an empty database on this server and return its SQLAlchemy URL."""
        name = f"test_{next(self._names)}"
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{name}"

    def drop_database(self, url: str) -> None:
        """Drop a database made by new_database, closing whatever connections a test left open."""
        name = url.rsplit("/", 1)[1]
        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def stop(self) -> None:
        """Stop the server at once (nothing in it is worth keeping) and delete its folder."""
        if self._running:
            self._running = False
            with suppress(PostgresUnavailable, OSError):  # it never got going, or is already gone
                self._run(
                    "pg_ctl", "stop", f"--pgdata={self.data}", "--mode=immediate", "--wait", "--timeout=10"
                )
        shutil.rmtree(self.dir, ignore_errors=True)
