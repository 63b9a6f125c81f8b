"""``meshbot incidents migrate --to URL``: an existing SQLite log copied to PostgreSQL, row for row.

Every row keeps its id, and events keep their ``prev_hash`` and ``hash`` as
written, so the audit chain on PostgreSQL is the same chain: ``verify`` with the
same audit key walks it to the same head.  The copy is one transaction on the
target, which must be at the same schema version and hold no meshbot data yet;
afterwards the identity sequences continue after the copied ids.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.storage.database import Database, DatabaseError
from bot.storage.dialect import Dialect

COPIED_TABLES = ("incidents", "incident_alerts", "incident_lifecycle", "incident_followups", "notifications", "outbox",
                 "events", "approval_requests", "approval_votes", "reminders_sent", "audit_chain")
"""In an order that satisfies every foreign key (outbox and requests refer to earlier rows of their own table)."""
NOT_COPIED = frozenset({"schema_version", "claims", "health", "apscheduler_jobs", "slack_deliveries"})
"""Bookkeeping each database keeps for itself (the version table, replicas' claims, the readiness row, the
scheduler's job store, which stays with each replica, and the Slack replay ledger, whose entries expire in minutes)."""


@dataclass(frozen=True)
class CopyReport:
    rows: dict[str, int]

    def lines(self) -> list[str]:
        return [f"copied {self.rows[table]:,} row(s) of {table}" for table in COPIED_TABLES if table in self.rows]


def source_tables(source: Database) -> list[str]:
    return [r[0] for r in source.db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                            "AND name NOT LIKE 'sqlite_%' ORDER BY name")]


def copy_database(source: Database, target: Database, intake: Database | None = None) -> CopyReport:
    """Copy every meshbot row from the SQLite ``source`` (and its request-path file ``intake``, which holds the
    notifications: ``bot.storage.intake``) into the empty, migrated ``target``."""
    if source.dialect != Dialect.SQLITE:
        raise DatabaseError("the source of a migration is meshbot's SQLite file (MESHBOT_DB)")
    intake = intake or source
    in_intake = set(source_tables(intake)) if intake is not source else set()
    unknown = sorted(set(source_tables(source)) - set(COPIED_TABLES) - NOT_COPIED)
    if unknown:
        raise DatabaseError(f"{source.path} has tables this meshbot does not know how to copy: {', '.join(unknown)}")
    source_version = _version(source)
    target_version = _version(target)
    if source_version != target_version:
        raise DatabaseError(f"{source.path} is at schema version {source_version} but {target.path} at "
                            f"{target_version}: run the same meshbot version on both")
    rows: dict[str, int] = {}
    with target.transaction() as db:
        for table in COPIED_TABLES:
            if table != "audit_chain" and db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone():  # noqa: S608
                raise DatabaseError(f"{target.path} already holds {table}: migrate into an empty database")
        # The migration's own audit_chain row (a new database's) gives way to the source's.
        db.execute("DELETE FROM audit_chain")
        for table in COPIED_TABLES:
            rows[table] = _copy_table(intake if table in in_intake else source, db, table)
        target.continue_ids(db, [t for t in COPIED_TABLES
                                 if "id" in _columns(intake if t in in_intake else source, t)])
    return CopyReport(rows)


def _version(database: Database) -> int:
    return database.db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]


def _columns(source: Database, table: str) -> list[str]:
    return [r[1] for r in source.db.execute(f"PRAGMA table_info({table})")]


def _copy_table(source: Database, db, table: str) -> int:
    columns = _columns(source, table)
    names = ", ".join(f'"{c}"' for c in columns)
    insert = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"  # noqa: S608
    count = 0
    # rowid: the order they were written in (ids for most tables; votes and ledger rows have only rowid).
    for row in source.db.execute(f"SELECT {names} FROM {table} ORDER BY rowid"):  # noqa: S608
        db.execute(insert, list(row))
        count += 1
    return count
