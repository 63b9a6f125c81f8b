"""PostgreSQL for several replicas: the same ``Database`` interface, the same SQL (translated by ``dialect``).

Connections come from a pool (psycopg_pool), each in autocommit mode like the SQLite side
(``isolation_level=None``): a transaction borrows one for its duration, a statement outside any
transaction for that statement.  The pool checks a connection before lending it and rolls back
whatever a borrower left open, so a connection that saw an error goes back healthy or is replaced;
none stays stuck in a failed transaction.

``transaction()`` takes no lock of its own, neither across replicas nor among this process's threads: a replica
paused inside one transaction stops nobody who decides about something else.  Each read-then-write decision
takes the narrowest lock that keeps it correct, first thing in its transaction: ``dialect.lock_key``'s
transaction-scoped advisory lock on its (kind, key) (an alert group, an approval request), or a conditional
``UPDATE … WHERE state = ?`` / a unique constraint with ``ON CONFLICT`` where one statement is the decision.  The
audit chain is the one lock every replica shares (``Lock.AUDIT_CHAIN``, see ``IncidentLog.append``), taken just
before an event is inserted and held until its commit.  Keys are locked before any event is appended; should a
transaction holding the chain still wait for a row another one holds, that is a deadlock PostgreSQL breaks within
``deadlock_timeout`` (1 s): the loser's error is transient (``transient``) and the work is retried.

Every hold is bounded by the server, not by the holder's good health: ``idle_in_transaction_session_timeout``
ends the session of a holder that stops talking (a replica paused by SIGSTOP or a long GC) and PostgreSQL
releases its locks with it; ``lock_timeout`` makes a waiter give up and retry instead of queueing behind it;
TCP keepalives and ``tcp_user_timeout`` notice a peer behind a partition in seconds, not the hours TCP's
defaults take (docs: runtime-config-client, libpq-connect).  The outbox's channels and approval executions are
leases with fencing tokens, on the database's clock: nothing is locked across a Slack or Kubernetes call.

Migrations take a second advisory lock, so replicas starting together migrate once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import psycopg_pool
from psycopg.rows import dict_row

from bot.storage.database import (
    Claim,
    Database,
    DatabaseError,
    DatabaseUnavailable,
    DatabaseUnusable,
    Migration,
    apply_pending,
    in_order,
)
from bot.storage.dialect import Dialect, inserted_table, normalised, script_to_postgres, to_postgres

log = logging.getLogger(__name__)

MIGRATION_LOCK = 0x6D696772  # "migr": held while one replica migrates
NAMED_LOCKS = 0x6D62  # "mb": first key of ``exclusively``'s two-key locks (the second: the name's hash)
CONNECT_TIMEOUT_SECONDS = 5
STATEMENT_TIMEOUT_MS = 30_000
"""No statement runs longer than this (a query gone wrong fails instead of holding its connection)."""
LOCK_TIMEOUT_MS = 10_000
"""A writer waits this long for a lock, then fails and is retried (``TRANSIENT``) instead of hanging behind a
holder that may be paused."""
IDLE_IN_TRANSACTION_MS = 10_000
"""A session idle this long inside a transaction is ended by the server and its locks released: the longest a
paused holder (SIGSTOP, a GC, a partition) can stall the replicas waiting for what it holds.  meshbot never waits
on anything but the database inside a transaction, so its own are idle for milliseconds."""
KEEPALIVES: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
              "tcp_user_timeout": 20_000}
"""libpq's TCP keepalives and user timeout: a server behind a partition is given up in about 25 s, not the
hours of the kernel's defaults (libpq-connect, "keepalives_idle", "tcp_user_timeout")."""
POOL_SIZE = 24
"""Connections per replica at most: the HTTP threads, workers, outbox and sweepers each borrow one at a time."""
POOL_WAIT_SECONDS = 3.0
"""A borrower waits this long for a connection (all busy, or the database down), then fails and is retried."""
CLAIM_LEASE_SECONDS = 10.0
"""How long a claim (a channel's outbox) lasts unless its holder renews it before each send: the longest a
channel stays silent when its holder is paused or dies while another replica lives."""


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


def unreachable(where: str, exc: BaseException) -> DatabaseUnavailable:
    said = " ".join(str(exc).split()) or type(exc).__name__
    return DatabaseUnavailable(f"PostgreSQL {where} is unreachable or refused meshbot ({said}): check that it is up, "
                         "the host and port in MESHBOT_DATABASE_URL, and the user and password")


@dataclass
class PostgresCursor:
    """A statement's result, fetched whole (its connection may go back to the pool at once), plus ``lastrowid``
    from ``RETURNING id`` as sqlite3's cursor has it."""

    rows: list[Any]
    rowcount: int
    lastrowid: int | None = None

    def fetchone(self) -> Any:
        return self.rows.pop(0) if self.rows else None

    def fetchall(self) -> list[Any]:
        rows, self.rows = self.rows, []
        return rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


@dataclass
class PostgresConnection:
    """The part of ``sqlite_utils.Database`` meshbot uses (``execute``, ``query``, ``executescript``)."""

    conn: psycopg.Connection
    identity_tables: set[str] = field(default_factory=set)
    """Tables whose ``id`` is an identity column: their inserts return it (``lastrowid``)."""
    dialect: Dialect = Dialect.POSTGRESQL
    in_transaction: bool = False
    """Inside ``transaction()``: ``dialect.lock_key`` locks only then (a lock outside one would end at once)."""

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> PostgresCursor:
        statement = to_postgres(sql)
        table = inserted_table(sql)
        returning = table in self.identity_tables and " returning " not in sql.lower()
        if returning:
            statement += " RETURNING id"
        with self.conn.cursor() as cursor:
            cursor.execute(statement, normalised(list(params)))
            rows = cursor.fetchall() if cursor.description is not None else []
            result = PostgresCursor(rows, cursor.rowcount)
        if returning:
            row = result.fetchone()  # None when ON CONFLICT DO NOTHING skipped the row
            result.lastrowid = row[0] if row else None
        return result

    def query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[dict[str, Any]]:
        with self.conn.cursor(row_factory=dict_row) as cursor:
            cursor.execute(to_postgres(sql), normalised(list(params)))
            rows = cursor.fetchall()
        yield from rows

    def executescript(self, script: str) -> None:
        self.conn.execute(script_to_postgres(script))
        self.identity_tables.update(identity_tables(self.conn))


@dataclass
class PooledStatements:
    """``db`` outside a transaction: each statement borrows a pooled connection and gives it back at once."""

    database: PostgresDatabase
    dialect: Dialect = Dialect.POSTGRESQL

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> PostgresCursor:
        with self.database.connection() as db:
            return db.execute(sql, params)

    def query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[dict[str, Any]]:
        with self.database.connection() as db:
            rows = list(db.query(sql, params))
        yield from rows

    def executescript(self, script: str) -> None:
        with self.database.connection() as db:
            db.executescript(script)


def identity_tables(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute("SELECT table_name FROM information_schema.columns WHERE table_schema = current_schema() "
                        "AND column_name = 'id' AND is_identity = 'YES'").fetchall()
    return {row[0] for row in rows}


class PostgresDatabase(Database):
    """meshbot's database on PostgreSQL (MESHBOT_DATABASE_URL); ``path`` is the URL without its password."""

    dialect = Dialect.POSTGRESQL

    def __init__(self, url: str, migrations: Sequence[Migration], *, password: str | None = None,
                 pool_size: int = POOL_SIZE):
        self._url = with_password(url, password)
        self.path = redacted(self._url)
        self.migrations = in_order(migrations)
        self._local = threading.local()
        self._identity_tables: set[str] = set()  # not the base class's _identity, the SQLite file's
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        """This replica, as the holder of the claims it takes."""
        self._pool = psycopg_pool.ConnectionPool(
            self._url, min_size=1, max_size=pool_size, open=False, timeout=POOL_WAIT_SECONDS,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_SECONDS, "application_name": "meshbot",
                    **KEEPALIVES},
            configure=_configure, check=psycopg_pool.ConnectionPool.check_connection, name="meshbot")
        self._pool_lock = threading.Lock()

    @property
    def url(self) -> str:
        """The connection URL, password included: for this process's own connections only, never logged."""
        return self._url

    def connect(self) -> psycopg.Connection:
        """A connection of its own, outside the pool (the readiness probe, tests)."""
        try:
            conn = psycopg.connect(self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS,
                                   application_name="meshbot", **KEEPALIVES)
            _configure(conn)
            return conn
        except psycopg.Error as exc:
            raise unreachable(self.path, exc) from None

    @contextlib.contextmanager
    def connection(self) -> Iterator[PostgresConnection]:
        """A pooled connection for the block: checked before it is lent, rolled back (or replaced when broken) when
        it comes back, whatever happened meanwhile."""
        current = getattr(self._local, "current", None)
        if current is not None:  # inside this thread's transaction (or claim): its statements go there
            yield current
            return
        self._open_pool()
        try:
            conn = self._pool.getconn()
        except (psycopg_pool.PoolTimeout, psycopg.OperationalError) as exc:
            raise unreachable(self.path, exc) from None
        try:
            if not self._identity_tables:
                self._identity_tables.update(identity_tables(conn))
            yield PostgresConnection(conn, self._identity_tables)
        except psycopg.OperationalError as exc:
            raise unreachable(self.path, exc) from exc
        finally:
            self._pool.putconn(conn)

    def _open_pool(self) -> None:
        with self._pool_lock:
            if self._pool.closed:
                self._pool.open(wait=False)

    @property
    def db(self) -> PostgresConnection | PooledStatements:  # type: ignore[override]
        """This thread's transaction's connection inside one; else statements that each borrow a pooled one."""
        current = getattr(self._local, "current", None)
        return current if current is not None else PooledStatements(self)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[PostgresConnection]:  # type: ignore[override]
        """A transaction on a pooled connection, with no lock of its own: what it decides, it locks itself
        (``dialect.lock_key``, first thing), so transactions about different keys run side by side on every
        replica and every thread."""
        if getattr(self._local, "transacting", False):
            raise DatabaseError("a transaction inside a transaction on one thread: meshbot never nests them")
        outer = getattr(self._local, "current", None)  # inside ``exclusively``: its connection goes on
        with self.connection() as db:
            self._local.current, self._local.transacting = db, True
            try:
                db.conn.execute("BEGIN")
                db.in_transaction = True
                yield db
                db.conn.execute("COMMIT")
            except BaseException:
                _roll_back(db.conn)
                raise
            finally:
                db.in_transaction = False
                self._local.current, self._local.transacting = outer, False

    def write_once(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        """One statement on a pooled connection in autocommit mode: its own transaction, no lock of this process."""
        with self.connection() as db:
            return int(db.execute(sql, parameters).rowcount)

    def migrate(self) -> int:
        try:
            with self.transaction() as db:
                # The whole migration is one transaction (PostgreSQL's DDL is transactional): a replica that
                # dies half-way leaves nothing behind, and the next one starts over.
                db.conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
                version = apply_pending(db, self.migrations, self.path)
                self._identity_tables.update(identity_tables(db.conn))
        except DatabaseUnavailable:
            raise
        except psycopg.OperationalError as exc:
            raise unreachable(self.path, exc) from None
        except psycopg.Error as exc:
            raise DatabaseUnusable(f"MESHBOT_DATABASE_URL {self.path}: the schema could not be brought up to date "
                                   f"({' '.join(str(exc).split())})") from None
        return version

    def check_writable(self) -> None:
        """The readiness probe: a write committed on a connection of its own, outside the pool, so a pool busy
        with a storm (or waiting for a lock) cannot make a healthy database look lost, and the other way round."""
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
        return self.db.execute("SELECT clock_timestamp()").fetchone()[0].astimezone(timezone.utc)

    def transient(self, exc: BaseException) -> bool:
        """Lost connections, a server restarting, lock and statement timeouts, serialisation failures: worth
        retrying.  A constraint or a malformed statement is not (psycopg's OperationalError vs the rest)."""
        return isinstance(exc, (DatabaseUnavailable, psycopg.OperationalError, psycopg_pool.PoolTimeout,
                                psycopg.errors.IdleInTransactionSessionTimeout))

    def continue_ids(self, db: PostgresConnection, tables: Sequence[str]) -> None:
        """Identity sequences continue after ids copied in explicitly (they do not see them by themselves)."""
        for table in tables:
            if table in self._identity_tables:
                db.conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                                f"COALESCE(MAX(id), 0) + 1, false) FROM {table}")

    @contextlib.contextmanager
    def exclusively(self, name: str) -> Iterator[bool]:
        """``pg_try_advisory_lock`` on a pooled connection kept for the block: nobody waits, and a dead replica's
        lock ends with its session.  (Two-key locks: a space apart from ``lock_key``'s one-bigint keys.)"""
        with self.connection() as db:
            row = db.conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", [NAMED_LOCKS, name]).fetchone()
            held = bool(row and row[0])  # a SELECT of one function always returns one row
            self._local.current = db
            try:
                yield held
            finally:
                self._local.current = None
                if held and not (db.conn.closed or db.conn.broken):
                    db.conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", [NAMED_LOCKS, name])

    @contextlib.contextmanager
    def claim(self, name: str) -> Iterator[Claim | None]:
        """The named claim for this replica until the block ends; None while another replica's lease on it runs.

        A lease, not a lock: taken and given back in statements of their own, so nothing is held across the
        work the claim is for (a Slack call).  ``Claim.still_held`` renews it and is the fencing check before
        each send; a holder that is paused past ``CLAIM_LEASE_SECONDS`` finds it taken over and stops.  Times are
        the database's clock (river's and Oban's job leases work the same way)."""
        self.db.execute("INSERT OR IGNORE INTO claims (name) VALUES (?)", [name])
        row = self.db.execute(
            "UPDATE claims SET holder = ?, lease_until = ((julianday('now') - 2440587.5) * 86400.0) + ? "
            "WHERE name = ? AND (holder IS NULL OR holder = ? OR lease_until IS NULL "
            "OR lease_until < ((julianday('now') - 2440587.5) * 86400.0)) RETURNING next_at",
            [self.holder, CLAIM_LEASE_SECONDS, name, self.holder]).fetchone()
        if row is None:
            yield None
            return
        claim = Claim(name, _parse(row[0]), still_held=lambda: self._renew(name))
        try:
            yield claim
        finally:
            self._release(claim)

    def _renew(self, name: str) -> bool:
        return self.db.execute(
            "UPDATE claims SET lease_until = ((julianday('now') - 2440587.5) * 86400.0) + ? WHERE name = ? "
            "AND holder = ?", [CLAIM_LEASE_SECONDS, name, self.holder]).rowcount == 1

    def _release(self, claim: Claim) -> None:
        try:
            self.db.execute("UPDATE claims SET holder = NULL, lease_until = NULL, next_at = COALESCE(?, next_at) "
                            "WHERE name = ? AND holder = ?", [_iso(claim.next_at), claim.name, self.holder])
        except DatabaseError as exc:  # the lease then ends by itself, CLAIM_LEASE_SECONDS from its last renewal
            log.warning("could not hand back the claim %s (%s); it lapses by itself", claim.name, exc)

    def close(self) -> None:
        with self._pool_lock:
            if not self._pool.closed:
                self._pool.close(timeout=5)


def _configure(conn: psycopg.Connection) -> None:
    """Every connection's session limits (set as statements, not the ``options`` parameter, which would replace
    options the URL sets, such as search_path)."""
    conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
    conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
    conn.execute(f"SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_MS}")


def _roll_back(conn: psycopg.Connection) -> None:
    """Leave the connection outside any transaction; a connection that cannot even roll back is closed (the pool
    replaces it), never lent again half-way through a failed transaction."""
    if conn.closed or conn.broken:
        return
    try:
        conn.execute("ROLLBACK")
    except psycopg.Error:
        conn.close()


def _parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(timezone.utc).isoformat() if moment else None
