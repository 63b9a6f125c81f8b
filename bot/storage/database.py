"""The SQLite database (through sqlite-utils): one connection per thread, WAL, versioned migrations.

WAL lets readers (``/mesh incident list``) run while a writer commits, and
``busy_timeout`` makes concurrent writers wait their turn instead of failing.
Migrations are numbered; ``schema_version`` records which ran, so an old
database is brought forward on start and a newer one is refused.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

import sqlite_utils

from commands.errors import MeshbotError

Migration = Callable[[sqlite_utils.Database], None]
MIGRATIONS: list[tuple[int, str, Migration]] = []
"""(version, description, function) in order; modules append with ``@migration``."""
MIGRATION_MODULES = ("bot.incidents.log", "bot.incidents.outbox", "bot.approvals.store", "bot.reminders.service")
"""Modules that own tables; imported before migrating so every migration is known."""


class DatabaseError(MeshbotError):
    pass


def migration(version: int, description: str) -> Callable[[Migration], Migration]:
    def register(function: Migration) -> Migration:
        if any(v == version for v, _, _ in MIGRATIONS):
            raise ValueError(f"migration {version} registered twice")
        MIGRATIONS.append((version, description, function))
        MIGRATIONS.sort(key=lambda m: m[0])
        return function
    return register


def _import_migration_modules() -> None:
    import importlib

    for module in MIGRATION_MODULES:
        importlib.import_module(module)


class Database:
    def __init__(self, path: str | Path):
        self.path = str(path)
        self._local = threading.local()
        # Writers of this process queue here and are woken the moment the lock is free; left to SQLite's
        # busy handler they would poll with sleeps of up to 100 ms (the webhook's p99 in the alert storm).
        self._write_lock = threading.Lock()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection."""
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            except sqlite3.Error as exc:
                raise DatabaseError(f"cannot open database {self.path}: {exc}") from None
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA busy_timeout=30000")
            # With WAL, NORMAL syncs at checkpoints instead of every commit: a crash of meshbot loses
            # nothing; only a power loss can roll back the last moments (SQLite docs, "WAL mode").
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA foreign_keys=ON")
            db = self._local.db = sqlite_utils.Database(connection)
        return db

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        """``BEGIN IMMEDIATE``: take the write lock up front so read-then-write decisions cannot race."""
        db = self.db
        with self._write_lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def migrate(self, migrations: Sequence[tuple[int, str, Migration]] | None = None) -> int:
        """Run the migrations this database has not seen; returns the schema version."""
        if migrations is None:
            _import_migration_modules()
            migrations = MIGRATIONS
        with self.transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version "
                       "(version INTEGER PRIMARY KEY, description TEXT, applied_at TEXT)")
            current = db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
            known = max((v for v, _, _ in migrations), default=0)
            if current > known:
                raise DatabaseError(f"database {self.path} has schema version {current}, newer than this "
                                    f"meshbot knows ({known}); upgrade meshbot")
            for version, description, function in migrations:
                if version <= current:
                    continue
                function(db)
                db.execute("INSERT INTO schema_version VALUES (?, ?, ?)",
                           [version, description, datetime.now(timezone.utc).isoformat()])
                current = version
        return current

    def check_writable(self) -> None:
        """Raise DatabaseError unless a write can be committed (the readiness probe)."""
        try:
            with self.transaction() as db:
                db.execute("CREATE TABLE IF NOT EXISTS health (id INTEGER PRIMARY KEY, at TEXT)")
                db.execute("INSERT OR REPLACE INTO health VALUES (1, ?)", [datetime.now(timezone.utc).isoformat()])
        except sqlite3.Error as exc:
            raise DatabaseError(f"database {self.path} is not writable: {exc}") from None

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.conn.close()
            self._local.db = None
