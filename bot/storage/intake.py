"""The request path's own SQLite file: what HTTP requests write before they are answered.

SQLite has one writer per file.  An Alertmanager webhook (the raw notification) and a Slack request (its replay
key) must be stored before they are answered, and with every table in one file they queued behind whatever
transaction held the writer: the processor applying a notification holds it for 100-300 ms while diagnoses keep
the GIL busy, which put the webhook's p99 at 387-589 ms in ``bench/bench_alert_storm.py`` (goal < 100 ms).  In a
file of its own (``meshbot.db`` -> ``meshbot.intake.db``, beside it) they wait only for each other: short,
append-mostly transactions, none of which copies the WAL back (with its fsync): the incident processor does, in
the background (``INTAKE_CHECKPOINT_SECONDS``).

PostgreSQL has no single writer (rows are locked, not the database), and SQLite in memory has no file to put
beside it: there the intake *is* the main database, and everything stays in one transaction as before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bot.storage.database import Database, Migration, has_local_file
from bot.storage.dialect import Dialect

log = logging.getLogger(__name__)

INTAKE_CHECKPOINT_SECONDS = 10.0
"""How often the WAL of the intake file is copied back: a storm's minute of notifications (~50 MB) stays under
the WAL's size limit (``bot.storage.database.WAL_SIZE_LIMIT``)."""


def intake_path(path: str | Path) -> str:
    """``/data/meshbot.db`` -> ``/data/meshbot.intake.db`` (not ``…db-intake``: SQLite's own ``-wal`` and ``-shm``
    files look like that, and they are the kind an operator deletes when the process is down)."""
    main = Path(path)
    return str(main.with_name(f"{main.stem}.intake{main.suffix}"))


def separate(path: str, dialect: Dialect) -> bool:
    """Whether a database at ``path`` keeps the request path's tables in a file of their own."""
    return dialect == Dialect.SQLITE and has_local_file(path)


def open_intake(main: Database, migrations: Sequence[Migration]) -> Database:
    """The database the request path writes to: its own migrated file beside a SQLite file, else ``main``."""
    if not separate(main.path, main.dialect):
        return main
    intake = Database(intake_path(main.path), migrations, background_checkpoints=True)
    intake.migrate()
    return intake


def move_tables(db: Any, tables: Sequence[str], migrations: Sequence[Migration]) -> None:
    """A main-database migration: the rows of ``tables`` move to the intake file, then the tables are dropped.

    Rows keep their ids, and are inserted with OR IGNORE and committed to the intake before the main file's
    transaction drops them: a start that dies in between finds them in both and moves nothing twice.  Nothing
    moves on PostgreSQL or in memory (``separate``)."""
    if getattr(db, "dialect", Dialect.SQLITE) != Dialect.SQLITE:
        return
    files = {row[1]: row[2] for row in db.execute("PRAGMA database_list").fetchall()}
    path = files.get("main") or ""
    if not separate(path, Dialect.SQLITE):
        return
    intake = Database(intake_path(path), migrations)
    try:
        intake.migrate()
        with intake.transaction() as target:
            for table in tables:
                columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})").fetchall()]
                names = ", ".join(f'"{c}"' for c in columns)
                insert = f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"  # noqa: S608
                moved = 0
                for row in db.execute(f"SELECT {names} FROM {table} ORDER BY rowid"):  # noqa: S608
                    target.execute(insert, list(row))
                    moved += 1
                if moved:
                    log.info("moved %d row(s) of %s to %s", moved, table, intake.path)
    finally:
        intake.close()
    for table in tables:
        db.execute(f"DROP TABLE {table}")
