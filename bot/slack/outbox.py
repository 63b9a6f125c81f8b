"""No lost messages: every Slack post meshbot makes for later delivery is written here first, then delivered.

Over 450 lines because claim, send, record and pacing are one state machine over one table (the pure parts,
entries, lanes, batches and backoff, are already in ``bot.slack.entries``).

Incidents, approvals, reminders and slash-command answers queue their posts here.  The outbox imports
nothing of bot.incidents and writes none of its tables: an entry carries its incident's id only to keep
that conversation's posts in order (and to batch alert updates), and what was sent or given up on goes
to the ``DeliveryRecord`` it is built with (the incident log keeps each as an event, in the same
transaction; bot.incidents.delivery).

Entries are delivered in lanes — one per incident (or per message and its
thread when there is no incident) — strictly in the order they were recorded
within a lane (a thread reply never overtakes its parent, an update never its
message).  Lanes with a new incident's first message or a resolved incident
go first, so neither waits behind another incident's backlog.  Alert updates
in a thread are batched: at most one reply per incident per
``batch_interval`` summarises everything that arrived meanwhile ("+9,000
alerts, 12 namespaces; full list attached", the list as a file).  At most one
new message per second per channel (Slack's rate limit for posting,
https://docs.slack.dev/apis/web-api/rate-limits), paced with the injected clock, and
retried with exponential backoff while Slack is down or rate-limiting —
including after a restart, since the queue lives in SQLite.  Errors Slack
will never accept (``not_in_channel``, ``invalid_blocks``) end an entry as
failed (and recorded), so one bad message cannot block a channel forever.
Errors about the token or workspace (``invalid_auth``, ``token_revoked``…) are
nobody's message's fault: they hold the whole queue, retried with backoff,
until someone fixes the token.  ``SlackError.kind`` (bot.slack.client) decides
which is which; the entries and their planning are in ``bot.slack.entries``.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import sqlite_utils

from bot.runtime.loops import WakeableLoop
from bot.runtime.metrics import Metrics
from bot.slack.blocks import Message
from bot.slack.client import SlackClient, SlackError, SlackErrorKind
from bot.slack.entries import (
    Delivery,
    Entry,
    Op,
    State,
    backoff_seconds,
    batch_segment,
    batch_summary,
    lanes_by_priority,
    not_before,
)
from bot.storage.database import Claim, Database, inserted_id, migration
from commands.times import rfc3339

log = logging.getLogger(__name__)

BATCH_INLINE = 5
"""Up to this many alert updates are posted as lines of one message; more become a summary and a file."""
PASS_GAP_SECONDS = 0.25
"""Passes woken sooner than this after the last one wait for the rest (``WakeableLoop.min_gap``).  Each pass plans
the whole backlog; an alert storm wakes the outbox once per stored notification, and back-to-back passes made it
the serving process's largest holder of the GIL.  Slack's pacing is a post per second per channel, so a message
waits at most a quarter of that longer."""
HELD_CHANNEL_RECHECK = 2.0
"""Seconds until a channel another replica holds is looked at again."""


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


class DeliveryRecord(Protocol):
    """Whoever keeps a record of what the outbox delivered (the incident log, in bot.incidents.delivery).

    bot.slack does not import bot.incidents: the record is handed to the outbox when it is built."""

    def recorded(self, db: sqlite_utils.Database, delivery: Delivery) -> None:
        """Called inside the transaction that marks the entry sent or failed: both are kept, or neither."""

    def finished(self, incident_ids: Collection[int]) -> Collection[int]:
        """Of these incidents, the ones that are over (their posts go first and are not batched)."""

    def severity_ranks(self, incident_ids: Collection[int]) -> Mapping[int, int]:
        """Each incident's urgency, 0 the most severe: urgent lanes go by it, then by age."""

    def before_pass(self, outbox: Outbox) -> None:
        """At the start of each delivery pass: may queue entries of its own."""

    def after_pass(self) -> None:
        """At the end of each delivery pass, once what could be sent was."""


class Unrecorded:
    """No record: an outbox for posts nobody keeps an account of."""

    def recorded(self, db: sqlite_utils.Database, delivery: Delivery) -> None:
        pass

    def finished(self, incident_ids: Collection[int]) -> Collection[int]:
        return ()

    def severity_ranks(self, incident_ids: Collection[int]) -> Mapping[int, int]:
        return {}

    def before_pass(self, outbox: Outbox) -> None:
        pass

    def after_pass(self) -> None:
        pass


def _database_clock() -> datetime:
    """Stands for the outbox's database's clock until ``__post_init__`` puts ``Database.now`` in its place."""
    return datetime.now(timezone.utc)


@dataclass
class Outbox:
    database: Database
    slack: SlackClient
    metrics: Metrics | None = None
    record: DeliveryRecord = field(default_factory=Unrecorded)
    """Told of every entry sent or failed, and around every pass."""
    min_post_interval: float = 1.0
    """Seconds between two new messages in one channel."""
    clock: Callable[[], datetime] = field(default=_database_clock)
    """What pacing and retries are timed by: the database's clock unless a test gives one, so replicas whose own
    clocks disagree still space posts 1 s apart and never read another's next-post time as minutes away."""
    batch_interval: float = 30.0
    """Seconds between two alert-update replies in one incident's thread (MESHBOT_THREAD_BATCH_SECONDS)."""
    before_pass: Callable[[], object] | None = None
    """Waited for before each delivery pass: the answers in flight first (``bot.runtime.priority``)."""
    _last_post: dict[str, datetime] = field(default_factory=dict)
    _last_batch: dict[int, datetime] = field(default_factory=dict)
    _batch_members: dict[int, list[int]] = field(default_factory=dict)
    """For a batch Slack accepted but not yet recorded: every entry it stood for."""
    _loop: WakeableLoop = field(init=False)
    _delivery_lock: threading.Lock = field(default_factory=threading.Lock)
    _delivered_unrecorded: dict[int, str | None] = field(default_factory=dict)
    """Entries Slack accepted whose 'sent' could not be written yet: recorded again, never re-sent."""
    _workspace_error: str | None = None
    """Set during a pass when Slack refused the token: the rest of the queue waits."""
    _claim: Claim | None = None
    """The channel being delivered: its claim is checked (and renewed) before each send."""

    # -- recording (inside the caller's transaction) --------------------------------

    def _insert(self, db: sqlite_utils.Database, *, incident_id: int | None, channel: str, op: Op,
                payload: dict[str, Any], parent_id: int | None = None, target_id: int | None = None) -> int:
        cursor = db.execute(
            "INSERT INTO outbox (incident_id, channel, op, parent_id, target_id, payload, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [incident_id, channel, str(op), parent_id, target_id, json.dumps(payload), rfc3339(self.clock())])
        return inserted_id(cursor)

    def post(self, db: sqlite_utils.Database, *, incident_id: int | None, channel: str, message: Message,
             thread_of: int | None = None) -> int:
        """Record a new message (a thread reply when ``thread_of`` is another entry's id)."""
        return self._insert(db, incident_id=incident_id, channel=channel, op=Op.POST, parent_id=thread_of,
                            payload={"text": message.text, "blocks": message.blocks})

    def post_alert_update(self, db: sqlite_utils.Database, *, incident_id: int, channel: str, message: Message,
                          thread_of: int | None, namespace: str | None, resolved: bool) -> int:
        """Record one alert's firing/resolved line for a thread; delivered batched with its neighbours."""
        return self._insert(db, incident_id=incident_id, channel=channel, op=Op.POST, parent_id=thread_of,
                            payload={"text": message.text, "blocks": message.blocks,
                                     "batch": {"namespace": namespace, "status": "resolved" if resolved else "firing"}})

    def update(self, db: sqlite_utils.Database, *, incident_id: int | None, channel: str, message: Message,
               of: int) -> int:
        """Record a replacement of the message recorded as entry ``of``."""
        return self._insert(db, incident_id=incident_id, channel=channel, op=Op.UPDATE, target_id=of,
                            payload={"text": message.text, "blocks": message.blocks})

    def upload(self, db: sqlite_utils.Database, *, incident_id: int | None, channel: str, thread_of: int,
               filename: str, title: str, content: str) -> int:
        return self._insert(db, incident_id=incident_id, channel=channel, op=Op.UPLOAD, parent_id=thread_of,
                            payload={"filename": filename, "title": title, "content": content})

    def upload_image(self, db: sqlite_utils.Database, *, incident_id: int | None, channel: str, thread_of: int,
                     filename: str, title: str, image: bytes, alt_text: str) -> int:
        """Record a picture for a thread (a PNG of a few dozen KB, kept base64 in the payload until sent)."""
        return self._insert(db, incident_id=incident_id, channel=channel, op=Op.UPLOAD, parent_id=thread_of,
                            payload={"filename": filename, "title": title, "alt_text": alt_text,
                                     "image_base64": base64.b64encode(image).decode("ascii")})

    def adopt(self, db: sqlite_utils.Database, *, channel: str, ts: str) -> int:
        """Record a message posted directly (a slash command's "Running…") so its replies can queue here."""
        cursor = db.execute(
            "INSERT INTO outbox (incident_id, channel, op, payload, state, ts, created_at, sent_at) "
            "VALUES (NULL, ?, ?, ?, 'sent', ?, ?, ?)",
            [channel, str(Op.POST), json.dumps({"adopted": True}), ts, rfc3339(self.clock()),
             rfc3339(self.clock())])
        return inserted_id(cursor)

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
        self.record.before_pass(self)
        now = self.clock()
        next_due: float | None = None
        self._workspace_error = None
        # Channel by channel, the channel with the most urgent lane first.  On PostgreSQL each channel is
        # claimed (a lease on the database's clock, renewed before each send; no lock is held across a Slack
        # call) so one replica at a time delivers it: each message once, in order, paced 1/s from the shared
        # next-post time; a channel another replica holds is skipped, and one whose holder paused past the lease
        # is taken over (at most the one post in flight when it paused can go out twice).
        channels = dict.fromkeys(lane[0].channel for lane in lanes_by_priority(self._pending()))
        for channel in channels:
            if self._workspace_error:
                break  # the token is refused: every channel waits for the retry of this entry
            with self.database.claim(f"outbox:{channel}") as claim:
                if claim is None:
                    # Another replica delivers it; look again soon, so a holder that dies or pauses is taken over
                    # as soon as its lease ends (CLAIM_LEASE_SECONDS), not at this loop's idle wake-up.
                    next_due = HELD_CHANNEL_RECHECK if next_due is None else min(next_due, HELD_CHANNEL_RECHECK)
                    continue
                self._claim = claim
                try:
                    wait = self._deliver_channel(channel, claim, now)
                finally:
                    self._claim = None
            if wait is not None:
                next_due = wait if next_due is None else min(next_due, wait)
        if self.metrics:
            self.metrics.outbox_pending.set(self.pending_count())
        self.record.after_pass()
        return next_due

    def _pending(self, channel: str | None = None) -> list[Entry]:
        # Materialised: a cursor left open across the writes below would pin an old snapshot and make
        # SQLite refuse them ("database is locked") instead of waiting.
        rows = list(self.database.db.query(
            "SELECT * FROM outbox WHERE state = 'pending' AND channel = COALESCE(?, channel) ORDER BY id", [channel]))
        incident_ids = {r["incident_id"] for r in rows if r["incident_id"] is not None}
        finished = set(self.record.finished(incident_ids))
        ranks = self.record.severity_ranks(incident_ids)
        return [Entry.from_row(r, finished=r["incident_id"] in finished, severity_rank=ranks.get(r["incident_id"], 0))
                for r in rows]

    def _deliver_channel(self, channel: str, claim: Claim, now: datetime) -> float | None:
        """Deliver one claimed channel's lanes (read again: another replica may have sent some meanwhile)."""
        if claim.next_at is not None:  # the last post of whichever replica held the channel before
            shared = claim.next_at - timedelta(seconds=self.min_post_interval)
            self._last_post[channel] = max(self._last_post.get(channel, shared), shared)
        next_due: float | None = None
        for lane in lanes_by_priority(self._pending(channel)):
            if self._workspace_error:
                break
            wait, channel_waits = self._deliver_lane(lane, now)
            if wait is not None:
                next_due = wait if next_due is None else min(next_due, wait)
            if channel_waits:
                break
        if channel in self._last_post:
            claim.next_at = self._last_post[channel] + timedelta(seconds=self.min_post_interval)
        return next_due

    def _deliver_lane(self, lane: list[Entry], now: datetime) -> tuple[float | None, bool]:
        """Deliver a lane's entries in order until one must wait: (seconds until due, whether the channel waits)."""
        index = 0
        while index < len(lane):
            entry = lane[index]
            if not entry.batchable:
                blocked = self._deliver_in_turn(entry, None, now)
                if blocked:
                    return blocked
                index += 1
                continue
            run, edits, end = batch_segment(lane, index)
            followed = end < len(lane) or entry.finished  # a resolve or a note must not wait
            batch_wait = 0.0 if followed else self._seconds_until_next_batch(entry, now)
            for step, members in ([] if batch_wait > 0 else [(entry, run)]) + [(e, None) for e in edits]:
                blocked = self._deliver_in_turn(step, members, now)
                if blocked:
                    return blocked
            if batch_wait > 0:
                return batch_wait, False  # only this incident's alert updates wait; its edits and other lanes go on
            index = end
        return None, False

    def _deliver_in_turn(self, entry: Entry, run: list[Entry] | None, now: datetime) -> tuple[float, bool] | None:
        """Deliver one entry (or batch) when due; otherwise (seconds until it is, True: the channel waits too)."""
        wait = self._seconds_until_sendable(entry, now)
        if wait > 0:
            return wait, True
        if self._claim is not None and not self._claim.still_held():
            # Paused past the claim's lease (SIGSTOP, a GC): another replica delivers this channel now.  Sending
            # on would post what it posts too; stop, and claim the channel again only once its holder lets go.
            log.warning("outbox: channel %s was taken over by another replica while this one was paused; stopping "
                        "its delivery here", entry.channel)
            return self.min_post_interval, True
        if self._deliver(entry, run):
            return None
        row = self._row(entry.id)
        retry = self._seconds_until_sendable(Entry.from_row(row), self.clock()) if row["state"] == State.PENDING else 0.0
        return retry, True

    def _seconds_until_next_batch(self, entry: Entry, now: datetime) -> float:
        last = self._last_batch.get(entry.incident_id) if entry.incident_id is not None else None
        if last is None:
            return 0.0
        return max(self.batch_interval - (now - last).total_seconds(), 0.0)

    def _row(self, entry_id: int) -> dict[str, Any]:
        return list(self.database.db.query("SELECT * FROM outbox WHERE id = ?", [entry_id]))[0]

    def _seconds_until_sendable(self, entry: Entry, now: datetime) -> float:
        wait = 0.0
        if entry.next_attempt_at and entry.next_attempt_at > now:
            wait = (entry.next_attempt_at - now).total_seconds()
        last = self._last_post.get(entry.channel)
        if entry.op in (Op.POST, Op.UPLOAD) and last is not None:
            since = (self.clock() - last).total_seconds()  # now: a post earlier in this pass set ``last``
            wait = max(wait, self.min_post_interval - since)
        return wait

    def _deliver(self, entry: Entry, run: list[Entry] | None = None) -> bool:
        """Send one entry (or a batch of alert updates headed by it); True when the channel may go on."""
        if entry.id in self._delivered_unrecorded:
            self._sent(entry, self._delivered_unrecorded[entry.id], self._batch_members.get(entry.id))
            return True
        members = [e.id for e in run] if run and len(run) > 1 else None
        try:
            ts = self._send_batch(entry, run) if run is not None and members else self._send(entry)
        except _Dependency as exc:
            self._fail(entry, str(exc))
            return True
        except SlackError as exc:
            if exc.kind == SlackErrorKind.WORKSPACE:
                log.error("Slack refuses meshbot's token or installation (%s); holding all %d pending message(s) "
                          "until it is fixed", exc.error, self.pending_count())
                self._workspace_error = exc.error
                self._retry_later(entry, exc)
                return False
            if exc.kind != SlackErrorKind.TRANSIENT:  # this message will never go out; the channel goes on
                self._fail(entry, exc.error)
                return True
            self._retry_later(entry, exc)
            return False
        self._delivered_unrecorded[entry.id] = ts
        if members:
            self._batch_members[entry.id] = members
        if run is not None and entry.incident_id is not None:
            self._last_batch[entry.incident_id] = self.clock()
        self._sent(entry, ts, members)
        self._backoff_over()
        return True

    def _backoff_over(self) -> None:
        """Slack took a message: the others stop waiting out the backoff of an outage that is over.

        Without this an entry that failed at the end of an outage waits its full backoff (up to a minute,
        and a channel waits for its first entry) although Slack is back.  Rate limits (Retry-After) stay.
        """
        # A read first (it never blocks a writer under WAL): after most posts nothing is waiting.
        if self.database.db.execute("SELECT 1 FROM outbox WHERE state = 'pending' AND next_attempt_at IS NOT NULL "
                                    "AND COALESCE(last_error, '') != 'ratelimited' LIMIT 1").fetchone() is None:
            return
        with self.database.transaction() as db:  # queued behind this process's writers, not SQLite's busy loop
            cleared = db.execute("UPDATE outbox SET next_attempt_at = NULL WHERE state = 'pending' AND next_attempt_at "
                                 "IS NOT NULL AND COALESCE(last_error, '') != 'ratelimited'").rowcount
        if cleared:
            log.info("Slack is answering again: %d pending message(s) no longer wait for their backoff", cleared)
            self.wake()  # this pass planned with the old times; the next one reads the new ones

    def _send_batch(self, head: Entry, run: list[Entry]) -> str | None:
        """One reply for many alert updates: their lines, or beyond a few a summary with the full list as a file."""
        thread_ts = self._required_ts(head.parent_id, "its thread's first message") if head.parent_id else None
        lines = [e.payload["text"] for e in run]
        try:
            if len(run) <= BATCH_INLINE:
                blocks = [block for e in run for block in e.payload["blocks"]]
                return self.slack.post_message(head.channel, "\n".join(lines), blocks, thread_ts=thread_ts).ts
            summary = f"{batch_summary(run)}; full list attached"
            self.slack.upload_text(head.channel, thread_ts, filename=f"incident-{head.incident_id}-alerts.txt",
                                   title=f"Alert updates for incident #{head.incident_id} ({len(run):,})",
                                   content="\n".join(lines) + "\n", comment=summary)
            return None
        finally:
            self._last_post[head.channel] = self.clock()

    def _send(self, entry: Entry) -> str | None:
        payload = entry.payload
        if entry.op == Op.POST:
            thread_ts = self._required_ts(entry.parent_id, "its thread's first message") if entry.parent_id else None
            try:
                return self.slack.post_message(entry.channel, payload["text"], payload["blocks"],
                                               thread_ts=thread_ts).ts
            finally:  # paced from the end of the call, so Slack never sees two posts closer than the interval
                self._last_post[entry.channel] = self.clock()
        if entry.op == Op.UPDATE:
            ts = self._required_ts(entry.target_id, "the message it updates")
            self.slack.update_message(entry.channel, ts, payload["text"], payload["blocks"])
            return ts
        thread_ts = self._required_ts(entry.parent_id, "its thread's first message")
        try:
            if "image_base64" in payload:
                self.slack.upload_image(entry.channel, thread_ts, filename=payload["filename"], title=payload["title"],
                                        content=base64.b64decode(payload["image_base64"]),
                                        alt_text=payload["alt_text"])
            else:
                self.slack.upload_text(entry.channel, thread_ts, filename=payload["filename"],
                                       title=payload["title"], content=payload["content"])
        finally:
            self._last_post[entry.channel] = self.clock()
        return None

    def _required_ts(self, entry_id: int | None, what: str) -> str:
        if entry_id is None:  # an update or upload is always recorded with the entry it depends on
            raise _Dependency(f"{what} was never recorded")
        row = self._row(entry_id)
        if row["state"] == State.SENT:
            return row["ts"]
        if row["state"] == State.FAILED:
            raise _Dependency(f"{what} could not be posted")
        raise SlackError("outbox", "waiting for an earlier message", transient=True)

    def _sent(self, entry: Entry, ts: str | None, members: list[int] | None = None) -> None:
        ids = members or [entry.id]
        with self.database.transaction() as db:
            marked = db.execute("UPDATE outbox SET state = 'sent', ts = ?, sent_at = ?, attempts = attempts + 1 "
                                "WHERE id IN (SELECT value FROM json_each(?)) AND state = 'pending'",
                                [ts, rfc3339(self.clock()), json.dumps(ids)]).rowcount
            if marked:  # else another replica took the channel over and recorded it first: recorded once
                self.record.recorded(db, Delivery(entry, ts=ts, batch=tuple(members or ())))
        self._delivered_unrecorded.pop(entry.id, None)
        self._batch_members.pop(entry.id, None)

    def _fail(self, entry: Entry, error: str) -> None:
        log.warning("giving up on Slack message %s in %s: %s", entry.id, entry.channel, error)
        with self.database.transaction() as db:
            db.execute("UPDATE outbox SET state = 'failed', last_error = ?, attempts = attempts + 1 WHERE id = ?",
                       [error, entry.id])
            self.record.recorded(db, Delivery(entry, error=error))

    def _retry_later(self, entry: Entry, error: SlackError) -> None:
        attempts = entry.attempts + 1
        delay = backoff_seconds(attempts, error.retry_after)
        when = not_before(self.clock() + timedelta(seconds=delay))
        log.info("Slack %s for message %s (attempt %d); retrying in %.0fs", error.error, entry.id, attempts, delay)
        self.database.db.execute("UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?",
                                 [attempts, rfc3339(when), error.error, entry.id])

    # -- the dispatcher thread ---------------------------------------------------------

    def __post_init__(self) -> None:
        self._loop = WakeableLoop("outbox", self.deliver_due, min_gap=PASS_GAP_SECONDS,
                                  before_pass=self.before_pass)
        if self.clock is _database_clock:
            self.clock = self.database.now

    def wake(self) -> None:
        self._loop.wake()

    def start(self) -> Outbox:
        self._loop.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._loop.stop(timeout)


class _Dependency(Exception):
    """The message this entry depends on failed for good."""
