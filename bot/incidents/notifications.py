"""Alertmanager webhook bodies: stored as they arrive (group commit), applied later in arrival order.

The webhook only stores the raw notification, so Alertmanager never times out
and retries into duplicates; ``bot.incidents.flow`` applies stored ones in
arrival order.  ``NotificationLog`` is the one owner of the ``notifications``
table, which lives in the request path's own file beside a SQLite database
(``bot.storage.intake``: a webhook never waits for the processor's transaction).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlite_utils

from bot.incidents.records import iso
from bot.storage.database import Database, inserted_id, migration

SET_ASIDE = "not applied: "
"""The start of a notification's error when it could not be applied (kept, and said in the channel)."""
NO_INCIDENT = "no incident to update"


@migration(1, "raw Alertmanager notifications, in the request path's own file")
def intake_notifications(db: sqlite_utils.Database) -> None:
    # The same table as the main database's migration 1 made, which moves here (bot.server.schema, migration 15).
    db.executescript("""
        CREATE TABLE notifications (
            id INTEGER PRIMARY KEY,
            received_at TEXT NOT NULL,
            group_key TEXT NOT NULL,
            status TEXT NOT NULL,
            body TEXT NOT NULL,
            processed_at TEXT,
            error TEXT
        );
        CREATE INDEX notifications_pending ON notifications(processed_at, id);
    """)


@dataclass
class Applying:
    """One notification being applied inside the main database's transaction ``db``."""

    db: Any
    outcome: tuple[str | None] | None = None

    def settle(self, error: str | None = None) -> None:
        """It is done with (applied, or set aside with ``error``): marked processed when the transaction commits."""
        self.outcome = (error,)


class NotificationLog:
    """Every statement on ``notifications``.

    When the table shares the main database (PostgreSQL; SQLite in memory), a notification is marked processed in
    the transaction that applied it: atomic, and how another replica tells it was applied.  In its own file it is
    marked right after that transaction commits; a crash in between applies it once more at the next start, which
    changes nothing (alerts are remembered by occurrence, as for Alertmanager's own re-sends: ``bot.incidents.flow``).
    """

    def __init__(self, intake: Database, main: Database, clock: Callable[[], datetime]):
        self.intake = intake
        self.main = main
        self.clock = clock
        self.shared = intake is main

    def add(self, db: sqlite_utils.Database, received_at: str, group_key: str, status: str, body: str) -> int:
        return inserted_id(db.execute("INSERT INTO notifications (received_at, group_key, status, body) "
                                       "VALUES (?, ?, ?, ?)", [received_at, group_key, status, body]))

    def unprocessed(self, limit: int = 100) -> list[tuple[int, str]]:
        """The oldest stored notifications not yet applied: (id, body)."""
        rows = self.intake.db.query(
            "SELECT id, body FROM notifications WHERE processed_at IS NULL ORDER BY id LIMIT ?", [limit])
        return [(row["id"], row["body"]) for row in rows]

    @contextlib.contextmanager
    def applying(self, notification_id: int) -> Iterator[Applying]:
        """The main database's transaction for applying one notification; marked processed only if ``settle``d."""
        with self.main.transaction() as db:
            step = Applying(db)
            yield step
            if step.outcome is not None and self.shared:
                self._mark(db, notification_id, step.outcome[0])
        if step.outcome is not None and not self.shared:
            with self.intake.transaction() as intake:
                self._mark(intake, notification_id, step.outcome[0])

    def processed(self, db: Any, notification_id: int) -> bool:
        row = self._reader(db).execute("SELECT processed_at FROM notifications WHERE id = ?",
                                       [notification_id]).fetchone()
        return bool(row and row[0])

    def group_of(self, notification_id: int) -> str:
        return self.intake.db.execute("SELECT group_key FROM notifications WHERE id = ?",
                                      [notification_id]).fetchone()[0]

    def set_aside_in_group(self, db: Any, group_key: str) -> int:
        """How many of the group's notifications were set aside (processed with ``SET_ASIDE``'s error)."""
        return self._reader(db).execute("SELECT COUNT(*) FROM notifications WHERE group_key = ? AND error LIKE ?",
                                        [group_key, f"{SET_ASIDE}%"]).fetchone()[0]

    def resolutions_without_incident(self, db: Any, group_key: str, limit: int = 50) -> list[str]:
        """Bodies of the group's latest resolved notifications that found no open incident (they came first)."""
        return [r[0] for r in self._reader(db).execute(
            "SELECT body FROM notifications WHERE group_key = ? AND status = 'resolved' AND processed_at IS NOT NULL "
            "AND error = ? ORDER BY id DESC LIMIT ?", [group_key, NO_INCIDENT, limit])]

    def _mark(self, db: Any, notification_id: int, error: str | None) -> None:
        db.execute("UPDATE notifications SET processed_at = ?, error = ? WHERE id = ?",
                   [iso(self.clock()), error, notification_id])

    def _reader(self, db: Any) -> Any:
        """The main transaction's own connection when the table is in it; the intake file's otherwise (the
        processor marks each notification before it reads the next, so what it reads there is committed)."""
        return db if self.shared else self.intake.db


@dataclass(eq=False)
class _Waiting:
    row: tuple[str, str, str, str]
    done: threading.Event = field(default_factory=threading.Event)
    leads: bool = False
    id: int | None = None
    error: BaseException | None = None


class NotificationWriter:
    """Stores raw webhook bodies; webhooks arriving together share one transaction (group commit).

    Each transaction must wait for SQLite's single writer, and under a storm ten webhooks queueing for it one
    by one (each re-taking the GIL several times while holding it) is what made the webhook's p99 miss 100 ms.
    The first webhook to arrive commits everyone queued behind it; when more arrived meanwhile, the oldest of
    them commits the next group.  Every body is committed before its webhook is answered."""

    def __init__(self, log: NotificationLog):
        self._log = log
        self._lock = threading.Lock()
        self._queue: list[_Waiting] = []
        self._committing = False

    def store(self, received_at: str, group_key: str, status: str, body: str) -> int:
        mine = _Waiting((received_at, group_key, status, body))
        with self._lock:
            self._queue.append(mine)
            mine.leads = not self._committing
            self._committing = True
        if not mine.leads:
            mine.done.wait()
        if mine.leads:  # first in, or handed the next group by the previous committer
            self._commit_group()
        if mine.error is not None:
            raise mine.error
        if mine.id is None:  # the committer sets an id or an error before it sets ``done``
            raise RuntimeError("a stored webhook body got no id")
        return mine.id

    def _commit_group(self) -> None:
        with self._lock:
            group, self._queue = self._queue, []
        try:
            with self._log.intake.transaction() as db:
                for waiting in group:
                    waiting.id = self._log.add(db, *waiting.row)
        except BaseException as exc:  # every webhook of the group answers with the error; none is half-stored
            for waiting in group:
                waiting.error = exc
        with self._lock:
            successor = self._queue[0] if self._queue else None
            if successor is None:
                self._committing = False
            else:
                successor.leads = True
        for waiting in group:
            waiting.leads = False
            waiting.done.set()
        if successor is not None:
            successor.done.set()
