"""The SQLite database (through sqlite-utils): one connection per thread, WAL, versioned migrations.

WAL lets readers (``/mesh incident list``) run while a writer commits, and
``busy_timeout`` makes concurrent writers wait their turn instead of failing.
Migrations are numbered; ``schema_version`` records which ran, so an old
database is brought forward on start and a newer one is refused.  The database
is given the full ordered list (``bot.server.schema``); nothing registers itself.
With MESHBOT_DATABASE_URL the same interface runs on PostgreSQL (``bot.storage.postgres``, a subclass),
with the same SQL translated by ``bot.storage.dialect``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from bot.settings import SettingsError
from bot.storage.dialect import Dialect, normalised
from bot.storage.ownership import FileIdentity, FileInUse, hold_exclusively
from commands.errors import MeshbotError

MigrationFunction = Callable[[sqlite_utils.Database], None]
WAL_SIZE_LIMIT = 64 * 1024 * 1024
CHECKPOINT_EVERY_SECONDS = 60.0
T = TypeVar("T")
log = logging.getLogger(__name__)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


@dataclass(frozen=True)
class Migration:
    """One numbered schema change; the module that owns the tables lists its own in ``MIGRATIONS``."""

    version: int
    description: str
    apply: MigrationFunction


class DatabaseError(MeshbotError):
    pass


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached or is busy right now (a lost connection, a restart, a lock or statement
    timeout): the same work later may well succeed, so it is retried, never given up on."""


class DatabaseUnusable(DatabaseError, SettingsError):
    """MESHBOT_DB names a file meshbot cannot use (corrupted, truncated, read-only…).  A SettingsError too, so
    ``meshbot serve`` ends with one line naming the file and the fix and the settings exit code (78)."""


def unusable(path: str, exc: BaseException) -> DatabaseUnusable:
    """One line: which file, what SQLite (or the OS) said, and what to do about it."""
    said = str(exc) or type(exc).__name__
    lowered = said.lower()
    # SQLite's own wording (sqlite3.c sqlite3ErrStr): SQLITE_NOTADB, SQLITE_CORRUPT, SQLITE_READONLY, SQLITE_CANTOPEN.
    if "not a database" in lowered or "malformed" in lowered:
        fix = ("restore it from a backup, or move it aside so meshbot starts a new one "
               "(the incident log and reminder ledger then start empty)")
    elif "readonly" in lowered or "read-only" in lowered or isinstance(exc, PermissionError):
        fix = (f"make the file and its directory writable by meshbot's user (SQLite's WAL mode also writes "
               f"{path}-wal and {path}-shm beside it), or point MESHBOT_DB at a writable volume")
    elif "unable to open" in lowered or isinstance(exc, OSError):
        fix = "check that the directory exists and is writable, or point MESHBOT_DB at a writable volume"
    else:
        fix = "check the file (sqlite3 FILE 'PRAGMA integrity_check'), or point MESHBOT_DB elsewhere"
    return DatabaseUnusable(f"MESHBOT_DB {path}: cannot use the database ({said}): {fix}")


def migration(version: int, description: str) -> Callable[[MigrationFunction], Migration]:
    """Describe a migration function; it runs only when listed in the migrations a Database is given."""
    def describe(function: MigrationFunction) -> Migration:
        return Migration(version, description, function)
    return describe


def in_order(migrations: Sequence[Migration]) -> tuple[Migration, ...]:
    """The migrations as given, refused unless their versions strictly increase (1, 2, 3…)."""
    versions = [m.version for m in migrations]
    if any(later <= earlier for earlier, later in zip(versions, versions[1:])):
        raise ValueError(f"migration versions must strictly increase, got {versions}")
    return tuple(migrations)


def has_local_file(path: str | os.PathLike) -> bool:
    """False for SQLite in memory and for a PostgreSQL URL: nothing (audit key, anchor) can be kept beside it."""
    text = str(path)
    return text != ":memory:" and "://" not in text


def inserted_id(cursor: Any) -> int:
    """The id of the row an INSERT just wrote (both backends report it; None would mean nothing was written)."""
    if cursor.lastrowid is None:
        raise RuntimeError("the database reported no id for an inserted row")
    return int(cursor.lastrowid)


def apply_pending(db: Any, migrations: Sequence[Migration], where: str) -> int:
    """Inside the caller's transaction: run what ``schema_version`` does not list yet; the version after.
    The same on both backends (``db`` is sqlite-utils' Database or ``postgres.PostgresConnection``)."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_version "
               "(version INTEGER PRIMARY KEY, description TEXT, applied_at TEXT)")
    current = db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
    known = migrations[-1].version if migrations else 0
    if current > known:
        raise DatabaseError(f"database {where} has schema version {current}, newer than this "
                            f"meshbot knows ({known}); upgrade meshbot")
    for step in migrations:
        if step.version <= current:
            continue
        step.apply(db)
        db.execute("INSERT INTO schema_version VALUES (?, ?, ?)",
                   [step.version, step.description, datetime.now(timezone.utc).isoformat()])
        current = step.version
    return current


class _Normalised(sqlite_utils.Database):
    """sqlite-utils' Database whose statements get their parameters as PostgreSQL gets them (``dialect.normalised``):
    the same input is stored the same way on both backends."""

    def execute(self, sql: str, parameters: Any = None) -> sqlite3.Cursor:
        return super().execute(sql, normalised(parameters) if parameters else parameters)


@migration(14, "the one-open-incident-per-group index on a hash of the key, on PostgreSQL")
def hashed_group_index(db: Any) -> None:
    # A btree entry holds at most 2704 bytes (PostgreSQL docs, btree "Index Entry Size"), so an alert group with a
    # longer groupKey could open no incident there (and SQLite has no such limit): the index keys on its md5.
    if getattr(db, "dialect", None) != Dialect.POSTGRESQL:
        return
    db.execute("DROP INDEX incidents_one_open_per_group")
    db.execute("CREATE UNIQUE INDEX incidents_one_open_per_group ON incidents (md5(group_key)) WHERE status = 'open'")


@dataclass
class Claim:
    """Work one replica holds for now (a Slack channel's outbox), and when that work may next be done."""

    name: str
    next_at: datetime | None = None
    """Shared by every replica on PostgreSQL: e.g. when the channel may take its next post (1/s per channel)."""
    still_held: Callable[[], bool] = lambda: True
    """The fencing check before each piece of work: renews the claim, False once another replica took it over
    (its holder was paused past the lease).  One process owns a SQLite file: always True there."""


@migration(7, "claims: work one replica at a time holds (a channel's outbox), with its next due time")
def claims_table(db: Any) -> None:
    db.executescript("""
        CREATE TABLE claims (
            name TEXT PRIMARY KEY,
            next_at TEXT
        );
    """)


@migration(12, "claims are leases: their holder and when the lease ends, on the database's clock")
def claim_leases(db: Any) -> None:
    # A row lock held for the whole delivery kept a channel silent on every replica while its holder was paused
    # (91 s once) or partitioned (until TCP gave up); a lease ends by itself and is checked before each send.
    db.execute("ALTER TABLE claims ADD COLUMN holder TEXT")
    db.execute("ALTER TABLE claims ADD COLUMN lease_until DOUBLE PRECISION")


class Database:
    dialect = Dialect.SQLITE
    background_checkpoints = False

    def __init__(self, path: str | Path, migrations: Sequence[Migration], *, background_checkpoints: bool = False):
        """``background_checkpoints``: no commit checkpoints the WAL (SQLite's default every 1,000 pages, with an
        fsync, inside the committer's transaction); ``checkpoint_if_due`` does, outside any (the request path's
        file: a webhook's commit that happened to checkpoint took 350 ms in the alert storm)."""
        self.path = str(path)
        self.background_checkpoints = background_checkpoints
        self.migrations = in_order(migrations)
        """Every migration this meshbot knows, oldest first (``bot.server.schema.MIGRATIONS``)."""
        self._local = threading.local()
        # Writers of this process queue here and are woken the moment the lock is free; left to SQLite's
        # busy handler they would poll with sleeps of up to 100 ms (the webhook's p99 in the alert storm).
        self._write_lock = threading.Lock()
        self._identity: FileIdentity | None = None
        """The file this process serves from (set by ``hold_exclusively``); readiness fails once the path is another."""
        self._checkpointed = 0.0
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise unusable(self.path, exc) from None

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection."""
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            except sqlite3.Error as exc:
                raise unusable(self.path, exc) from None
            try:
                # The first statements to touch the file: a corrupted or read-only one fails here.
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA busy_timeout=30000")
                # With WAL, NORMAL syncs at checkpoints instead of every commit: a crash of meshbot loses
                # nothing; only a power loss can roll back the last moments (SQLite docs, "WAL mode").
                connection.execute("PRAGMA synchronous=NORMAL")
                connection.execute("PRAGMA foreign_keys=ON")
                # After a checkpoint, the WAL is cut back to this size instead of keeping its peak (a storm's
                # WAL once filled a small volume): SQLite docs, "journal_size_limit".
                connection.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
                if self.background_checkpoints:
                    connection.execute("PRAGMA wal_autocheckpoint=0")
            except sqlite3.Error as exc:
                connection.close()
                raise unusable(self.path, exc) from None
            db = self._local.db = _Normalised(connection)
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

    def write_once(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        """One write statement that is its own transaction; how many rows it changed.

        For a decision one statement makes (``INSERT … ON CONFLICT … WHERE``) on a request's path: the write lock is
        held while SQLite runs that statement, one handover of the GIL, where ``transaction``'s BEGIN, statements and
        COMMIT each wait for the GIL again while every other writer of this process waits for the lock (16 Slack
        acks queued behind each other that way: the ack bench's p50 was 270 ms)."""
        db = self.db
        with self._write_lock:
            return int(db.execute(sql, list(parameters)).rowcount)

    def migrate(self) -> int:
        """Run the migrations this database has not seen; returns the schema version.  A file SQLite cannot
        read or write raises DatabaseUnusable (one line naming it and the fix)."""
        try:
            return self._migrate()
        except sqlite3.Error as exc:
            raise unusable(self.path, exc) from None

    def _migrate(self) -> int:
        with self.transaction() as db:
            return apply_pending(db, self.migrations, self.path)

    def hold_exclusively(self) -> None:
        """``meshbot serve``'s claim on the file: a second process on it is refused (DatabaseUnusable, one line),
        and from now on readiness checks the path still names this file (``bot.storage.ownership``)."""
        if not has_local_file(self.path):
            return
        try:
            hold_exclusively(self.path)
        except FileInUse as exc:
            raise DatabaseUnusable(f"MESHBOT_DB {exc}") from None
        self._identity = FileIdentity.of(self.path)

    def check_writable(self) -> None:
        """Raise DatabaseError unless a write can be committed to the file this process started with (the
        readiness probe); checkpoints the WAL at most once a minute on the way."""
        problem = self._identity.problem(self.path) if self._identity else None
        if problem:
            raise DatabaseError(problem)
        try:
            with self.transaction() as db:
                db.execute("CREATE TABLE IF NOT EXISTS health (id INTEGER PRIMARY KEY, at TEXT)")
                db.execute("INSERT OR REPLACE INTO health VALUES (1, ?)", [datetime.now(timezone.utc).isoformat()])
            self.checkpoint_if_due(CHECKPOINT_EVERY_SECONDS)
        except sqlite3.Error as exc:
            raise DatabaseError(f"database {self.path} is not writable: {exc}") from None

    def checkpoint_if_due(self, every: float) -> None:
        """Copy the WAL back into the file when the last copy is ``every`` seconds old.  PASSIVE never waits for
        readers or writers (this process's writers neither: it takes no write lock); with journal_size_limit the
        next writer starts the WAL over."""
        if time.monotonic() - self._checkpointed > every:
            self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._checkpointed = time.monotonic()

    def now(self) -> datetime:
        """The database's clock: one process owns a SQLite file, so its clock is this machine's (PostgreSQL's is
        the server's, shared by every replica)."""
        return datetime.now(timezone.utc)

    def transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` is worth retrying: the file locked or busy beyond busy_timeout, or momentarily full."""
        if isinstance(exc, DatabaseUnavailable):
            return True
        said = str(exc).lower()
        return isinstance(exc, sqlite3.OperationalError) and ("locked" in said or "busy" in said or "full" in said
                                                               or "disk i/o" in said)

    def retrying(self, work: Callable[[], T], *, what: str, attempts: int = 8, first_wait: float = 0.2,
                 stop: threading.Event | None = None) -> T:
        """``work()`` again after a transient database error, waiting 0.2, 0.4 … 5 s (about 20 s in all); any
        other error, or the last transient one, is raised.  Logged once per retry without a traceback, so an
        outage is a few lines a minute, not a traceback per request."""
        wait = first_wait
        for _ in range(attempts - 1):
            try:
                return work()
            except Exception as exc:
                if not self.transient(exc) or (stop is not None and stop.is_set()):
                    raise
                log.warning("%s: database unavailable (%s); retrying in %.1fs", what, _one_line(exc), wait)
            if stop is not None:
                stop.wait(wait)
            else:
                time.sleep(wait)
            wait = min(wait * 2, 5.0)
        return work()

    def continue_ids(self, db: Any, tables: Sequence[str]) -> None:
        """After rows were copied in with their ids: new rows get the next ids (SQLite does this by itself)."""

    @contextlib.contextmanager
    def exclusively(self, name: str) -> Iterator[bool]:
        """True while this replica alone does the named work (False: another one is doing it now).  One process
        owns a SQLite file, so there it is always True; PostgreSQL holds a session advisory lock."""
        yield True

    @contextlib.contextmanager
    def claim(self, name: str) -> Iterator[Claim | None]:
        """One process owns a SQLite file, so a claim is always granted (PostgreSQL's locks a row)."""
        yield Claim(name)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.conn.close()
            self._local.db = None
