"""PostgreSQL for several replicas: the same ``Database`` interface, the same SQL (translated by ``dialect``).

Each thread has its own connection in autocommit mode, like the SQLite side
(``isolation_level=None``).  ``transaction()`` is SQLite's ``BEGIN IMMEDIATE``
carried over: a transaction-scoped advisory lock taken first, so read-then-write
decisions (one open incident per group, the next event's ``prev_hash``, a vote
moving a request to *executing*) are serialised across every replica exactly as
they are across the threads of one process.  Readers never take it.  PostgreSQL
releases it at COMMIT or ROLLBACK, and when a replica's connection dies
(docs: explicit-locking, "Advisory Locks").

Migrations take a second advisory lock, so replicas starting together migrate once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg.rows import dict_row

from bot.storage.database import Claim, Database, DatabaseError, DatabaseUnusable, Migration, apply_pending, in_order
from bot.storage.dialect import Dialect, inserted_table, script_to_postgres, to_postgres

log = logging.getLogger(__name__)

WRITE_LOCK = 0x6D657368  # "mesh": the one writer lock (SQLite's BEGIN IMMEDIATE)
MIGRATION_LOCK = 0x6D696772  # "migr": held while one replica migrates
NAMED_LOCKS = 0x6D62  # "mb": first key of ``exclusively``'s two-key locks (the second: the name's hash)
CONNECT_TIMEOUT_SECONDS = 5
STATEMENT_TIMEOUT_MS = 30_000
"""Like SQLite's busy_timeout: a writer waits this long for the lock, then fails instead of hanging."""


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc}" if user else netloc))


def with_password(url: str, password: str | None) -> str:
    """The URL with the password from MESHBOT_DATABASE_PASSWORD(_FILE) filled in (a URL's own wins)."""
    parts = urlsplit(url)
    if not password or parts.password is not None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    user = quote(parts.username or "", safe="")
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


def unreachable(where: str, exc: BaseException) -> DatabaseError:
    said = " ".join(str(exc).split()) or type(exc).__name__
    return DatabaseError(f"PostgreSQL {where} is unreachable or refused meshbot ({said}): check that it is up, "
                         "the host and port in MESHBOT_DATABASE_URL, and the user and password")


@dataclass
class PostgresCursor:
    """psycopg's cursor, plus ``lastrowid`` from ``RETURNING id`` as sqlite3's cursor has it."""

    cursor: psycopg.Cursor
    lastrowid: int | None = None

    @property
    def rowcount(self) -> int:
        return self.cursor.rowcount

    def fetchone(self) -> Any:
        return self.cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return self.cursor.fetchall()

    def __iter__(self) -> Iterator[Any]:
        return iter(self.cursor)


@dataclass
class PostgresConnection:
    """The part of ``sqlite_utils.Database`` meshbot uses (``execute``, ``query``, ``executescript``)."""

    conn: psycopg.Connection
    identity_tables: set[str] = field(default_factory=set)
    """Tables whose ``id`` is an identity column: their inserts return it (``lastrowid``)."""
    dialect: Dialect = Dialect.POSTGRESQL

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> PostgresCursor:
        statement = to_postgres(sql)
        table = inserted_table(sql)
        returning = table in self.identity_tables and " returning " not in sql.lower()
        if returning:
            statement += " RETURNING id"
        cursor = self.conn.cursor()
        cursor.execute(statement, list(params))
        result = PostgresCursor(cursor)
        if returning:
            row = cursor.fetchone()  # None when ON CONFLICT DO NOTHING skipped the row
            result.lastrowid = row[0] if row else None
        return result

    def query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[dict[str, Any]]:
        with self.conn.cursor(row_factory=dict_row) as cursor:
            cursor.execute(to_postgres(sql), list(params))
            yield from cursor.fetchall()

    def executescript(self, script: str) -> None:
        self.conn.execute(script_to_postgres(script))
        self.identity_tables.update(identity_tables(self.conn))


def identity_tables(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute("SELECT table_name FROM information_schema.columns WHERE table_schema = current_schema() "
                        "AND column_name = 'id' AND is_identity = 'YES'").fetchall()
    return {row[0] for row in rows}


class PostgresDatabase(Database):
    """meshbot's database on PostgreSQL (MESHBOT_DATABASE_URL); ``path`` is the URL without its password."""

    dialect = Dialect.POSTGRESQL

    def __init__(self, url: str, migrations: Sequence[Migration], *, password: str | None = None):
        self._url = with_password(url, password)
        self.path = redacted(self._url)
        self.migrations = in_order(migrations)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._identity: set[str] = set()

    @property
    def url(self) -> str:
        """The connection URL, password included: for this process's own connections only, never logged."""
        return self._url

    def connect(self) -> psycopg.Connection:
        try:
            conn = psycopg.connect(self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS,
                                   application_name="meshbot")
            # Not as the ``options`` parameter: that would replace options the URL itself sets (search_path…).
            conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
            return conn
        except psycopg.Error as exc:
            raise unreachable(self.path, exc) from None

    @property
    def db(self) -> PostgresConnection:  # type: ignore[override]
        """This thread's connection (a new one when the last was lost)."""
        db = getattr(self._local, "db", None)
        if db is None or db.conn.closed or db.conn.broken:
            conn = self.connect()
            if not self._identity:
                self._identity.update(identity_tables(conn))
            db = self._local.db = PostgresConnection(conn, self._identity)
        return db

    @contextlib.contextmanager
    def transaction(self) -> Iterator[PostgresConnection]:  # type: ignore[override]
        db = self.db
        with self._write_lock:  # this process's writers queue here, as on SQLite
            try:
                db.conn.execute("BEGIN")
                db.conn.execute("SELECT pg_advisory_xact_lock(%s)", [WRITE_LOCK])
            except psycopg.OperationalError as exc:
                raise unreachable(self.path, exc) from None
            try:
                yield db
            except BaseException:
                if not db.conn.broken:
                    db.conn.execute("ROLLBACK")
                raise
            db.conn.execute("COMMIT")

    def migrate(self) -> int:
        try:
            with self.transaction() as db:
                # The whole migration is one transaction (PostgreSQL's DDL is transactional): a replica that
                # dies half-way leaves nothing behind, and the next one starts over.
                db.conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
                version = apply_pending(db, self.migrations, self.path)
        except psycopg.OperationalError as exc:
            raise unreachable(self.path, exc) from None
        except psycopg.Error as exc:
            raise DatabaseUnusable(f"MESHBOT_DATABASE_URL {self.path}: the schema could not be brought up to date "
                                   f"({' '.join(str(exc).split())})") from None
        self._identity.update(identity_tables(self.db.conn))
        return version

    def check_writable(self) -> None:
        """The readiness probe: a write committed on a connection of its own (each probe runs in a new thread, so
        a thread's connection would outlive it), without the writer lock (PostgreSQL takes concurrent writers)."""
        try:
            with self.connect() as conn, conn.transaction():
                conn.execute("CREATE TABLE IF NOT EXISTS health (id BIGINT PRIMARY KEY, at TEXT)")
                conn.execute("INSERT INTO health VALUES (1, %s) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                             [datetime.now(timezone.utc).isoformat()])
        except psycopg.Error as exc:
            raise unreachable(self.path, exc) from None

    def now(self) -> datetime:
        """PostgreSQL's clock, which every replica shares: a replica whose own clock is minutes off still times
        approvals, leases and expiry like the others (docs: functions-datetime, ``clock_timestamp()``)."""
        return self.db.conn.execute("SELECT clock_timestamp()").fetchone()[0].astimezone(timezone.utc)

    def continue_ids(self, db: PostgresConnection, tables: Sequence[str]) -> None:
        """Identity sequences continue after ids copied in explicitly (they do not see them by themselves)."""
        for table in tables:
            if table in self._identity:
                db.conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                                f"COALESCE(MAX(id), 0) + 1, false) FROM {table}")

    @contextlib.contextmanager
    def exclusively(self, name: str) -> Iterator[bool]:
        """``pg_try_advisory_lock`` on this thread's own connection: no extra connection, nobody waits, and a
        dead replica's lock ends with its session.  (Two-key locks: a space apart from WRITE_LOCK's.)"""
        db = self.db
        held = db.conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", [NAMED_LOCKS, name]).fetchone()[0]
        try:
            yield held
        finally:
            if held and not (db.conn.closed or db.conn.broken):
                db.conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", [NAMED_LOCKS, name])

    @contextlib.contextmanager
    def claim(self, name: str) -> Iterator[Claim | None]:
        """The named row of ``claims``, locked for this replica until the block ends; None while another
        replica holds it (``FOR UPDATE SKIP LOCKED``: nobody waits, and a dead replica's lock goes with its
        connection).  A connection of its own (one per thread, kept), so the caller's transactions go on
        beside it."""
        conn = self._claim_connection()
        try:
            conn.execute("INSERT INTO claims (name) VALUES (%s) ON CONFLICT DO NOTHING", [name])
            conn.execute("BEGIN")
            row = conn.execute("SELECT next_at FROM claims WHERE name = %s FOR UPDATE SKIP LOCKED", [name]).fetchone()
            if row is None:
                conn.execute("ROLLBACK")
                yield None
                return
            claim = Claim(name, _parse(row[0]))
            yield claim
            if claim.next_at != _parse(row[0]):
                conn.execute("UPDATE claims SET next_at = %s WHERE name = %s", [_iso(claim.next_at), name])
            conn.execute("COMMIT")
        except BaseException:
            conn.close()  # whatever it held is released with it; the next claim connects again
            self._local.claims = None
            raise

    def _claim_connection(self) -> psycopg.Connection:
        conn = getattr(self._local, "claims", None)
        if conn is None or conn.closed or conn.broken:
            conn = self._local.claims = self.connect()
        return conn

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.conn.close()
            self._local.db = None
        claims = getattr(self._local, "claims", None)
        if claims is not None:
            claims.close()
            self._local.claims = None


def _parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(timezone.utc).isoformat() if moment else None
