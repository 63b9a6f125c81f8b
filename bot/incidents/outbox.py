"""No lost messages: every Slack post an incident needs is written here first, then delivered.

Entries are delivered per channel strictly in the order they were recorded
(a thread reply never overtakes its parent, an update never its message),
at most one new message per second per channel (Slack's rate limit), and
retried with exponential backoff while Slack is down or rate-limiting —
including after a restart, since the queue lives in SQLite.  Errors Slack
will never accept (``not_in_channel``, ``invalid_blocks``) end an entry as
failed, recorded in the incident log, so one bad message cannot block a
channel forever.  Errors about the token or workspace (``invalid_auth``,
``token_revoked``…) are nobody's message's fault: they hold the whole queue,
retried with backoff, until someone fixes the token.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

import sqlite_utils

from bot.storage.background import WakeableLoop
from bot.slack.blocks import Message
from bot.storage.database import Database, migration
from bot.incidents.log import EventKind, IncidentLog, iso, parse_time
from bot.server.metrics import Metrics
from bot.slack.client import SlackClient, SlackError

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 60.0
PERMANENT_ERRORS = frozenset({
    "not_in_channel", "channel_not_found", "is_archived", "invalid_blocks", "invalid_blocks_format",
    "msg_too_long", "no_text", "message_not_found", "cant_update_message", "edit_window_closed",
    "restricted_action",
})

# ok:false answers about the token or the app's installation: every message would get them.
WORKSPACE_ERRORS = frozenset({"invalid_auth", "account_inactive", "token_revoked", "token_expired", "not_authed",
                              "missing_scope", "team_access_not_granted"})


# ok:false answers that mean "try again later" rather than "never".
TRANSIENT_ERRORS = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable",
                              "request_timeout"})


class Op(StrEnum):
    POST = "post"
    UPDATE = "update"
    UPLOAD = "upload"


class State(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


@migration(2, "the Slack outbox")
def _create_outbox(db: sqlite_utils.Database) -> None:
    db.executescript("""
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            incident_id INTEGER REFERENCES incidents(id),
            channel TEXT NOT NULL,
            op TEXT NOT NULL,
            parent_id INTEGER REFERENCES outbox(id),
            target_id INTEGER REFERENCES outbox(id),
            payload TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT,
            last_error TEXT,
            ts TEXT,
            created_at TEXT NOT NULL,
            sent_at TEXT
        );
        CREATE INDEX outbox_pending ON outbox(state, id);
    """)


MIGRATIONS = (_create_outbox,)
"""This module's schema changes, oldest first; ``bot.server.schema`` puts every module's in one list."""


@dataclass(frozen=True)
class Entry:
    id: int
    incident_id: int | None
    channel: str
    op: Op
    parent_id: int | None
    target_id: int | None
    payload: dict[str, Any]
    attempts: int
    next_attempt_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Entry:
        return cls(id=row["id"], incident_id=row["incident_id"], channel=row["channel"], op=Op(row["op"]),
                   parent_id=row["parent_id"], target_id=row["target_id"], payload=json.loads(row["payload"]),
                   attempts=row["attempts"], next_attempt_at=parse_time(row["next_attempt_at"]))


def backoff_seconds(attempts: int, retry_after: float | None = None) -> float:
    """1, 2, 4 … 60 s; never sooner than Slack's Retry-After."""
    delay = min(2.0 ** min(max(attempts - 1, 0), 16), MAX_BACKOFF_SECONDS)  # capped: 2.0 ** 1025 overflows
    return max(delay, retry_after or 0.0)


def not_before(moment: datetime) -> datetime:
    """``moment`` rounded up to a whole second, as stored: a retry is never due before Retry-After."""
    return moment if moment.microsecond == 0 else moment.replace(microsecond=0) + timedelta(seconds=1)


@dataclass
class Outbox:
    database: Database
    slack: SlackClient
    incidents: IncidentLog
    metrics: Metrics | None = None
    min_post_interval: float = 1.0
    """Seconds between two new messages in one channel."""
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))
    _last_post: dict[str, float] = field(default_factory=dict)
    _loop: WakeableLoop = field(init=False)
    _delivery_lock: threading.Lock = field(default_factory=threading.Lock)
    _delivered_unrecorded: dict[int, str | None] = field(default_factory=dict)
    """Entries Slack accepted whose 'sent' could not be written yet: recorded again, never re-sent."""
    _workspace_error: str | None = None
    """Set during a pass when Slack refused the token: the rest of the queue waits."""

    # -- recording (inside the caller's transaction) --------------------------------

    def _insert(self, db: sqlite_utils.Database, *, incident_id: int | None, channel: str, op: Op,
                payload: dict[str, Any], parent_id: int | None = None, target_id: int | None = None) -> int:
        cursor = db.execute(
            "INSERT INTO outbox (incident_id, channel, op, parent_id, target_id, payload, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [incident_id, channel, str(op), parent_id, target_id, json.dumps(payload), iso(self.clock())])
        return cursor.lastrowid

    def post(self, db: sqlite_utils.Database, *, incident_id: int | None, channel: str, message: Message,
             thread_of: int | None = None) -> int:
        """Record a new message (a thread reply when ``thread_of`` is another entry's id)."""
        return self._insert(db, incident_id=incident_id, channel=channel, op=Op.POST, parent_id=thread_of,
                            payload={"text": message.text, "blocks": message.blocks})

    def update(self, db: sqlite_utils.Database, *, incident_id: int | None, channel: str, message: Message,
               of: int) -> int:
        """Record a replacement of the message recorded as entry ``of``."""
        return self._insert(db, incident_id=incident_id, channel=channel, op=Op.UPDATE, target_id=of,
                            payload={"text": message.text, "blocks": message.blocks})

    def upload(self, db: sqlite_utils.Database, *, incident_id: int | None, channel: str, thread_of: int,
               filename: str, title: str, content: str) -> int:
        return self._insert(db, incident_id=incident_id, channel=channel, op=Op.UPLOAD, parent_id=thread_of,
                            payload={"filename": filename, "title": title, "content": content})

    def ts_of(self, entry_id: int) -> str | None:
        rows = list(self.database.db.query("SELECT ts FROM outbox WHERE id = ? AND state = 'sent'", [entry_id]))
        return rows[0]["ts"] if rows else None

    def pending_count(self) -> int:
        return self.database.db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0]

    # -- delivering -------------------------------------------------------------------

    def deliver_due(self) -> float | None:
        """One pass over the queue; returns seconds until something becomes due (None: queue empty)."""
        with self._delivery_lock:
            return self._deliver_pass()

    def _deliver_pass(self) -> float | None:
        now = self.clock()
        # Materialised: a cursor left open across the writes below would pin an old snapshot and make
        # SQLite refuse them ("database is locked") instead of waiting.
        rows = list(self.database.db.query("SELECT * FROM outbox WHERE state = 'pending' ORDER BY id"))
        blocked: set[str] = set()
        next_due: float | None = None
        self._workspace_error = None
        for entry in (Entry.from_row(r) for r in rows):
            if self._workspace_error:
                break  # the token is refused: every channel waits for the retry of this entry
            if entry.channel in blocked:
                continue
            wait = self._seconds_until_sendable(entry, now)
            if wait > 0:
                blocked.add(entry.channel)
                next_due = wait if next_due is None else min(next_due, wait)
                continue
            if not self._deliver(entry):
                blocked.add(entry.channel)
                retry = self._seconds_until_sendable(Entry.from_row(self._row(entry.id)), self.clock()) \
                    if self._row(entry.id)["state"] == State.PENDING else 0.0
                next_due = retry if next_due is None else min(next_due, retry)
        if self.metrics:
            self.metrics.outbox_pending.set(self.pending_count())
        return next_due

    def _row(self, entry_id: int) -> dict[str, Any]:
        return list(self.database.db.query("SELECT * FROM outbox WHERE id = ?", [entry_id]))[0]

    def _seconds_until_sendable(self, entry: Entry, now: datetime) -> float:
        wait = 0.0
        if entry.next_attempt_at and entry.next_attempt_at > now:
            wait = (entry.next_attempt_at - now).total_seconds()
        if entry.op in (Op.POST, Op.UPLOAD):
            since = time.monotonic() - self._last_post.get(entry.channel, float("-inf"))
            wait = max(wait, self.min_post_interval - since)
        return wait

    def _deliver(self, entry: Entry) -> bool:
        """Send one entry; True when the channel may go on (sent, or failed for good)."""
        if entry.id in self._delivered_unrecorded:
            self._sent(entry, self._delivered_unrecorded[entry.id])
            return True
        try:
            ts = self._send(entry)
        except _Dependency as exc:
            self._fail(entry, str(exc))
            return True
        except SlackError as exc:
            if exc.error in WORKSPACE_ERRORS:
                log.error("Slack refuses meshbot's token or installation (%s); holding all %d pending message(s) "
                          "until it is fixed", exc.error, self.pending_count())
                self._workspace_error = exc.error
                self._retry_later(entry, exc)
                return False
            if exc.error in PERMANENT_ERRORS or not (exc.transient or exc.error in TRANSIENT_ERRORS):
                self._fail(entry, exc.error)
                return True
            self._retry_later(entry, exc)
            return False
        self._delivered_unrecorded[entry.id] = ts
        self._sent(entry, ts)
        return True

    def _send(self, entry: Entry) -> str | None:
        payload = entry.payload
        if entry.op == Op.POST:
            thread_ts = self._required_ts(entry.parent_id, "its thread's first message") if entry.parent_id else None
            try:
                return self.slack.post_message(entry.channel, payload["text"], payload["blocks"],
                                               thread_ts=thread_ts).ts
            finally:  # paced from the end of the call, so Slack never sees two posts closer than the interval
                self._last_post[entry.channel] = time.monotonic()
        if entry.op == Op.UPDATE:
            ts = self._required_ts(entry.target_id, "the message it updates")
            self.slack.update_message(entry.channel, ts, payload["text"], payload["blocks"])
            return ts
        thread_ts = self._required_ts(entry.parent_id, "its thread's first message")
        try:
            self.slack.upload_text(entry.channel, thread_ts, filename=payload["filename"], title=payload["title"],
                                   content=payload["content"])
        finally:
            self._last_post[entry.channel] = time.monotonic()
        return None

    def _required_ts(self, entry_id: int | None, what: str) -> str:
        row = self._row(entry_id)
        if row["state"] == State.SENT:
            return row["ts"]
        if row["state"] == State.FAILED:
            raise _Dependency(f"{what} could not be posted")
        raise SlackError("outbox", "waiting for an earlier message", transient=True)

    def _sent(self, entry: Entry, ts: str | None) -> None:
        with self.database.transaction() as db:
            db.execute("UPDATE outbox SET state = 'sent', ts = ?, sent_at = ?, attempts = attempts + 1 WHERE id = ?",
                       [ts, iso(self.clock()), entry.id])
            if entry.incident_id is not None:
                self.incidents.append(db, entry.incident_id, "meshbot", EventKind.MESSAGE_POSTED,
                                      {"outbox_id": entry.id, "op": str(entry.op), "ts": ts,
                                       "thread_of": entry.parent_id, "text": _first_line(entry.payload)})
        self._delivered_unrecorded.pop(entry.id, None)

    def _fail(self, entry: Entry, error: str) -> None:
        log.warning("giving up on Slack message %s in %s: %s", entry.id, entry.channel, error)
        with self.database.transaction() as db:
            db.execute("UPDATE outbox SET state = 'failed', last_error = ?, attempts = attempts + 1 WHERE id = ?",
                       [error, entry.id])
            if entry.incident_id is not None:
                self.incidents.append(db, entry.incident_id, "meshbot", EventKind.MESSAGE_FAILED,
                                      {"outbox_id": entry.id, "op": str(entry.op), "error": error,
                                       "text": _first_line(entry.payload)})

    def _retry_later(self, entry: Entry, error: SlackError) -> None:
        attempts = entry.attempts + 1
        delay = backoff_seconds(attempts, error.retry_after)
        when = not_before(self.clock() + timedelta(seconds=delay))
        log.info("Slack %s for message %s (attempt %d); retrying in %.0fs", error.error, entry.id, attempts, delay)
        self.database.db.execute("UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?",
                                 [attempts, iso(when), error.error, entry.id])

    # -- the dispatcher thread ---------------------------------------------------------

    def __post_init__(self) -> None:
        self._loop = WakeableLoop("outbox", self.deliver_due)

    def wake(self) -> None:
        self._loop.wake()

    def start(self) -> Outbox:
        self._loop.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._loop.stop(timeout)


class _Dependency(Exception):
    """The message this entry depends on failed for good."""


def _first_line(payload: dict[str, Any]) -> str:
    text = payload.get("text") or payload.get("title") or ""
    return text.splitlines()[0][:200] if text else ""
