"""A real PostgreSQL server for the tests (Debian's ``postgresql`` package): initdb + pg_ctl into a temp dir.

One server per test session, on a free port, started as the ``postgres`` user
when the suite runs as root (PostgreSQL refuses to run as root).  Each test
gets a database of its own (``postgres.fresh()``), so nothing leaks between tests.
Password authentication (SCRAM) is on for TCP, so the URL meshbot gets has no
password and the password arrives the way MESHBOT_DATABASE_PASSWORD_FILE gives it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from bot.server.schema import MIGRATIONS
from bot.storage.database import Database
from bot.storage.postgres import PostgresDatabase, with_password


def _server_binaries() -> Path:
    """MESHBOT_TEST_PG_BIN, else the newest Debian ``postgresql`` server's bin directory."""
    if os.environ.get("MESHBOT_TEST_PG_BIN"):
        return Path(os.environ["MESHBOT_TEST_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _server_binaries()
USER = "meshbot"
PASSWORD = "test-only-password-0123456789"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_server_user() -> list[str]:
    """PostgreSQL will not run as root: drop to the ``postgres`` user the Debian package creates."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


@dataclass
class PostgresServer:
    root: Path
    port: int
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _shared: str | None = None

    @property
    def admin_url(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    def url(self, name: str) -> str:
        """A database's URL without the password (given as MESHBOT_DATABASE_PASSWORD)."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{name}"

    def create(self) -> str:
        """A new, empty database; its URL (no password)."""
        name = f"meshbot_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def fresh(self) -> PostgresDatabase:
        """A new, migrated schema of its own in one shared test database (a schema takes milliseconds to
        create and migrate; a database half a second to copy)."""
        if self._shared is None:
            self._shared = self.create()
        schema = f"test_{next(self._names)}"
        with psycopg.connect(with_password(self._shared, PASSWORD), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        database = PostgresDatabase(f"{self._shared}?options=-csearch_path%3D{schema}", MIGRATIONS, password=PASSWORD)
        database.migrate()
        return database

    def wait_until_session_ends(self, pid: int, timeout: float = 10.0) -> None:
        """Block until the server has ended backend ``pid``.  A client's close only *sends* Terminate; the
        backend releases its row and advisory locks when it processes that message, a moment later (the
        race CI once lost).  A replica that dies is in the same position: its locks go when PostgreSQL
        notices, not at the instant of death."""
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            while conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
                if time.monotonic() > deadline:
                    raise AssertionError(f"PostgreSQL still runs backend {pid} {timeout:.0f} s after its client closed")
                time.sleep(0.02)


def start_postgres() -> tuple[PostgresServer, Callable[[], None]]:
    initdb = PG_BIN / "initdb"
    if not initdb.exists():
        pytest.fail(f"PostgreSQL server binaries not found at {PG_BIN}: apt-get install -y postgresql "
                    "(or set MESHBOT_TEST_PG_BIN to the directory holding initdb and pg_ctl)")
    root = Path(tempfile.mkdtemp(prefix="meshbot-pg-"))
    data, sockets = root / "data", root / "run"
    sockets.mkdir()
    password_file = root / "password"
    password_file.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
        shutil.chown(password_file, "postgres")
    run = _as_server_user()
    subprocess.run([*run, str(initdb), "-D", str(data), "-U", USER, "--pwfile", str(password_file),
                    "--auth-local=trust", "--auth-host=scram-sha-256", "--no-locale", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True)
    port = _free_port()
    options = (f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
               "-c full_page_writes=off -c max_connections=300")
    subprocess.run([*run, str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "server.log"),
                    "-w", "-t", "30", "start"], check=True, capture_output=True)

    def stop() -> None:
        subprocess.run([*run, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)

    return PostgresServer(root, port), stop


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server, stop = start_postgres()
    try:
        yield server
    finally:
        stop()


BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def backend_database(request, tmp_path) -> Iterator[Database]:
    """meshbot's migrated database on each backend in turn: SQLite in tmp_path, then a fresh PostgreSQL one."""
    if request.param == "sqlite":
        database = Database(tmp_path / "meshbot.db", MIGRATIONS)
        database.migrate()
    else:
        database = request.getfixturevalue("postgres").fresh()
    yield database
    database.close()


DATABASE_ERRORS = (sqlite3.DatabaseError, psycopg.DatabaseError)
"""What each backend raises when the database itself refuses a statement (a trigger, a constraint)."""


def reopen(database: Database) -> Database:
    """The same database opened again, as the next process would (the same backend)."""
    if isinstance(database, PostgresDatabase):
        again: Database = PostgresDatabase(database.url, MIGRATIONS)
    else:
        again = Database(database.path, MIGRATIONS)
    again.migrate()
    return again


AUDIT_KEY = "backend-test-audit-key-0123456789abcdef"


@pytest.fixture(params=BACKENDS)
def backend_settings(request) -> dict[str, str]:
    """Settings overrides that put a test's meshbot on each backend in turn ({} keeps SQLite at MESHBOT_DB)."""
    if request.param == "sqlite":
        return {}
    server: PostgresServer = request.getfixturevalue("postgres")
    return {"database_url": server.create(), "database_password": PASSWORD, "audit_key": AUDIT_KEY}
