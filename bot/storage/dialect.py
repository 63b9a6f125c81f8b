"""The few places where PostgreSQL's SQL differs from SQLite's, translated in one pure function.

Every query in meshbot is written once, in SQLite's dialect (the embedded
default).  On PostgreSQL each statement passes through ``to_postgres`` first:

* placeholders ``?`` become ``%s`` (and a literal ``%`` becomes ``%%``), outside string literals;
* ``INSERT OR IGNORE INTO …`` becomes ``INSERT INTO … ON CONFLICT DO NOTHING``;
* the column ``user`` (a reserved word in PostgreSQL: bare ``user`` is ``CURRENT_USER``) is quoted;
* ``rowid`` (SQLite's insertion order) becomes ``ctid`` — only used as a tie-break after a timestamp
  in the append-only vote table, where the physical order is the insertion order;
* ``id IN (SELECT value FROM json_each(?))`` becomes ``jsonb_array_elements_text`` cast to bigint.

Schema scripts (``executescript``) get the DDL differences as well:

* ``INTEGER PRIMARY KEY`` (SQLite's rowid alias) becomes an identity column, other ``INTEGER`` ``BIGINT``;
* ``CREATE TRIGGER … BEGIN SELECT RAISE(ABORT, 'why'); END;`` becomes a PL/pgSQL function raising
  ``why`` and a ``FOR EACH ROW`` trigger that calls it (docs: sql-createtrigger, plpgsql-trigger);
* ``strftime('%Y-%m-%dT%H:%M:%SZ', 'now')`` becomes ``to_char(now() AT TIME ZONE 'UTC', …)``.

``DATABASE_EPOCH`` (the database server's clock, in seconds since 1970) is SQLite's ``julianday('now')``
arithmetic and PostgreSQL's ``clock_timestamp()`` (docs: functions-datetime, "Current Date/Time"): leases,
heartbeats and pacing are decided by the one clock every replica shares, never by a replica's own, which
may be minutes off (a replica 5 minutes ahead once took over a live execution).

``lock_key`` is what a read-then-write decision takes first: on PostgreSQL a transaction-scoped advisory lock on
its own (kind, key) — one alert group, one approval request — so replicas deciding about different keys never wait
for each other; on SQLite nothing, since ``BEGIN IMMEDIATE`` already runs one writer at a time.

``INSERT … RETURNING id`` is not spelled out here: the PostgreSQL connection appends it to inserts into
tables with an identity ``id`` so ``cursor.lastrowid`` means the same on both backends.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class Dialect(StrEnum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


_TOKENS = re.compile(r"""('(?:[^']|'')*')|("(?:[^"]|"")*")|(\?)|(%)|\b(user|rowid)\b""", re.IGNORECASE)
_INSERT_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO\b", re.IGNORECASE)
_JSON_IDS = re.compile(r"SELECT\s+value\s+FROM\s+json_each\(\?\)", re.IGNORECASE)
_INSERT_TABLE = re.compile(r"^\s*INSERT\s+(?:OR\s+IGNORE\s+)?INTO\s+([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)
_TRIGGER = re.compile(
    r"CREATE\s+TRIGGER\s+(?P<name>\w+)\s+BEFORE\s+(?P<event>UPDATE(?:\s+OF\s+\w+)?|DELETE|INSERT)\s+ON\s+"
    r"(?P<table>\w+)\s+BEGIN\s+SELECT\s+RAISE\s*\(\s*ABORT\s*,\s*'(?P<why>(?:[^']|'')*)'\s*\)\s*;\s*END\s*;",
    re.IGNORECASE)
_ROWID_KEY = re.compile(r"\bINTEGER\s+PRIMARY\s+KEY\b(?!\s*\()", re.IGNORECASE)
_INTEGER = re.compile(r"\bINTEGER\b", re.IGNORECASE)
DATABASE_EPOCH = "((julianday('now') - 2440587.5) * 86400.0)"
"""The database's clock as epoch seconds, in SQLite's dialect (``to_postgres`` translates it)."""
_DATABASE_EPOCH = re.compile(re.escape(DATABASE_EPOCH))
_PG_NOW_TEXT = "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
_STRFTIME_NOW = re.compile(r"strftime\('%Y-%m-%dT%H:%M:%SZ',\s*'now'\)", re.IGNORECASE)


class Lock(StrEnum):
    """What a ``lock_key`` lock is about; its key says which one."""

    GROUP = "group"
    """An alert group's incidents (key: the groupKey): one open incident per group, its updates in arrival order;
    people's changes to an incident (resolve, stage, diagnosis) take its group too, so both are one lock."""
    REQUEST = "request"
    """An approval request (key: its id): its votes, the state transition they decide, its one rollback."""
    REMINDER = "reminder"
    """A certificate reminder (key: certificate and slot): posted once."""
    ANCHORS = "anchors"
    """The audit channel's thread anchors (key: the channel's role): each state change anchored once."""
    OUTAGES = "outages"
    """Which open incidents share a probable cause (key: "joins"): diagnoses are recorded one at a time, so the
    second of two same-cause incidents sees the first and joins its conversation."""
    AUDIT_CHAIN = "audit-chain"
    """The incident log's hash chain (key: "events"): the next event's ``prev_hash`` is the last one's hash, so
    appends take turns — the one lock every replica shares, taken just before an event is inserted."""


LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || ':' || ?, 0))"
"""A 64-bit advisory lock key hashed from the schema, the kind and the key (docs: functions-admin, "Advisory Lock
Functions"): the schema keeps two installations sharing one database apart.  The single-bigint key space is apart
from the two-int keys of ``PostgresDatabase.exclusively``."""


TRY_LOCK_SQL = LOCK_SQL.replace("pg_advisory_xact_lock", "pg_try_advisory_xact_lock")


def _locks_here(db: Any) -> bool:
    """PostgreSQL only, and only inside a transaction (outside one a statement is its own decision); SQLite's
    ``BEGIN IMMEDIATE`` already runs one writer at a time."""
    return getattr(db, "dialect", None) == Dialect.POSTGRESQL and getattr(db, "in_transaction", False)


def lock_key(db: Any, kind: Lock, key: object) -> None:
    """Hold the (kind, key) lock until the caller's transaction ends: a transaction taking the same one waits (at
    most ``lock_timeout``), any other does not.  Take it first, before the reads the decision rests on."""
    if _locks_here(db):
        db.execute(LOCK_SQL, [f"{kind}:{key}"])


def try_lock_key(db: Any, kind: Lock, key: object) -> bool:
    """``lock_key`` without the wait: False, and nothing held, while another transaction holds it."""
    if not _locks_here(db):
        return True
    return bool(db.execute(TRY_LOCK_SQL, [f"{kind}:{key}"]).fetchone()[0])


def _replace_outside_literals(sql: str, *, placeholders: bool) -> str:
    def swap(match: re.Match) -> str:
        if match.group(1) or match.group(2):
            return match.group(0)  # a string literal or a quoted identifier stays as it is
        if match.group(3):
            return "%s" if placeholders else "?"
        if match.group(4):
            return "%%" if placeholders else "%"
        word = match.group(5).lower()
        return '"user"' if word == "user" else "ctid"
    return _TOKENS.sub(swap, sql)


NUL_STANDIN = "\ufffd"
"""What U+0000 in a parameter is stored as, on both backends: PostgreSQL's text cannot hold it at all (an alert with
one in a label was refused on PostgreSQL only, and lost), so SQLite stores the same replacement character."""


def normalised(params: Any) -> Any:
    """Statement parameters with every U+0000 in their strings replaced by ``NUL_STANDIN``."""
    if isinstance(params, str):
        return params.replace("\x00", NUL_STANDIN) if "\x00" in params else params
    if isinstance(params, Mapping):
        return {key: normalised(value) for key, value in params.items()}
    if isinstance(params, (list, tuple)):
        return [normalised(value) for value in params]
    return params


@functools.lru_cache(maxsize=1024)  # meshbot's statements are constants: each is translated once
def to_postgres(sql: str) -> str:
    """One statement with ``?`` parameters, as PostgreSQL (psycopg's ``%s``) wants it."""
    ignore = bool(_INSERT_OR_IGNORE.match(sql))
    sql = _DATABASE_EPOCH.sub("EXTRACT(EPOCH FROM clock_timestamp())::float8", sql)
    sql = _STRFTIME_NOW.sub(_PG_NOW_TEXT, sql)
    if ignore:
        sql = _INSERT_OR_IGNORE.sub("INSERT INTO", sql, count=1)
    sql = _JSON_IDS.sub("SELECT value::bigint FROM jsonb_array_elements_text(?::jsonb) AS ids(value)", sql)
    sql = _replace_outside_literals(sql, placeholders=True)
    if ignore:
        sql = sql.rstrip().rstrip(";") + " ON CONFLICT DO NOTHING"
    return sql


@functools.lru_cache(maxsize=1024)
def inserted_table(sql: str) -> str | None:
    """The table an INSERT writes to (None for any other statement)."""
    match = _INSERT_TABLE.match(sql)
    return match.group(1).lower() if match else None


def _trigger(match: re.Match) -> str:
    name, table, why = match.group("name"), match.group("table"), match.group("why")
    event = " ".join(match.group("event").split()).upper()
    return (f"CREATE FUNCTION {name}_refuse() RETURNS trigger LANGUAGE plpgsql AS $fn$ "
            f"BEGIN RAISE EXCEPTION '{why}'; END $fn$; "
            f"CREATE TRIGGER {name} BEFORE {event} ON {table} FOR EACH ROW EXECUTE FUNCTION {name}_refuse();")


def script_to_postgres(script: str) -> str:
    """A schema script (no parameters) in PostgreSQL's DDL."""
    script = _TRIGGER.sub(_trigger, script)
    script = _ROWID_KEY.sub("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", script)
    script = _INTEGER.sub("BIGINT", script)
    script = _STRFTIME_NOW.sub(_PG_NOW_TEXT, script)
    return _replace_outside_literals(script, placeholders=False)
