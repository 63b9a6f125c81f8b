"""The incident log: incidents, their alerts, and an append-only, keyed hash chain of events.

Every event stores an HMAC-SHA256 (keyed with the audit key, which is not in
the database) over its content and the previous event's hash, so editing a
row, or rewriting the chain from there on, is detected by ``meshbot incidents
verify`` unless the editor also holds the key.  Deleting events at the very
end leaves a valid chain, so the head (event id + hash prefix) is also
anchored outside the database — a file next to it, the scheduler's Lease, and
the incident's Slack thread — and ``verify`` compares the chain with them.
Events written before the key existed keep their plain SHA-256 hashes as a
legacy prefix.  SQLite triggers refuse UPDATE and DELETE on events.
The threat model is in docs/security.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import sqlite_utils

from bot.storage.database import Database, has_local_file, migration
from commands.clients.lease import LeaderElector
from commands.errors import MeshbotError, UserError

log = logging.getLogger(__name__)

GENESIS = "0" * 64
AUDIT_KEY_MIN_CHARS = 32
ANCHOR_PREFIX_CHARS = 16
"""64 bits of the head's HMAC: enough that nobody without the key can forge a matching event."""
ANCHOR_ANNOTATION = "meshbot.io/audit-head"
ANCHOR_EVERY = timedelta(minutes=5)
"""The head is anchored at least this often while events are written (and at every state change)."""
STATE_CHANGE_KINDS = ("incident_opened", "state_changed")


class IncidentStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class EventKind(StrEnum):
    INCIDENT_OPENED = "incident_opened"
    ALERT_RECEIVED = "alert_received"
    ALERT_RESOLVED = "alert_resolved"
    DIAGNOSTICS_RUN = "diagnostics_run"
    MESSAGE_POSTED = "message_posted"
    MESSAGE_FAILED = "message_failed"
    NOTE = "note"
    STATE_CHANGED = "state_changed"
    REMINDER = "reminder"
    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL_CLICK = "approval_click"
    APPROVAL_STATE = "approval_state"
    ACTION_EXECUTED = "action_executed"
    ACTION_VERIFIED = "action_verified"
    ACTION_FAILED = "action_failed"


@migration(1, "incidents, incident alerts, hash-chained events, raw notifications")
def _create_incident_tables(db: sqlite_utils.Database) -> None:
    db.executescript("""
        CREATE TABLE incidents (
            id INTEGER PRIMARY KEY,
            group_key TEXT NOT NULL,
            title TEXT NOT NULL,
            severity TEXT NOT NULL,
            status TEXT NOT NULL,
            channel TEXT,
            top_message INTEGER,
            opened_at TEXT NOT NULL,
            resolved_at TEXT,
            resolved_by TEXT,
            labels TEXT NOT NULL DEFAULT '{}',
            namespaces TEXT NOT NULL DEFAULT '[]',
            services TEXT NOT NULL DEFAULT '[]',
            external_url TEXT NOT NULL DEFAULT '',
            playbook TEXT,
            diagnosed INTEGER NOT NULL DEFAULT 0,
            source TEXT NOT NULL DEFAULT 'alertmanager'
        );
        -- One open incident per Alertmanager group, enforced by the database itself.
        CREATE UNIQUE INDEX incidents_one_open_per_group ON incidents(group_key) WHERE status = 'open';
        CREATE TABLE incident_alerts (
            incident_id INTEGER NOT NULL REFERENCES incidents(id),
            occurrence TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            alertname TEXT NOT NULL,
            status TEXT NOT NULL,
            starts_at TEXT NOT NULL,
            ends_at TEXT,
            summary TEXT NOT NULL DEFAULT '',
            labels TEXT NOT NULL DEFAULT '{}',
            generator_url TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (incident_id, occurrence)
        );
        CREATE INDEX incident_alerts_by_occurrence ON incident_alerts(occurrence);
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            incident_id INTEGER REFERENCES incidents(id),
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            kind TEXT NOT NULL,
            data TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX events_by_incident ON events(incident_id, id);
        CREATE TRIGGER events_no_update BEFORE UPDATE ON events
            BEGIN SELECT RAISE(ABORT, 'the incident log is append-only'); END;
        CREATE TRIGGER events_no_delete BEFORE DELETE ON events
            BEGIN SELECT RAISE(ABORT, 'the incident log is append-only'); END;
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


@migration(5, "keyed audit chain: events written before the audit key stay a legacy (unkeyed) prefix")
def keyed_audit_chain(db: sqlite_utils.Database) -> None:
    # Events already in the log keep their plain SHA-256 hashes (nothing is rewritten, nothing lost);
    # every event after ``legacy_until`` is an HMAC with the audit key.
    db.executescript("""
        CREATE TABLE audit_chain (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            legacy_until INTEGER NOT NULL,
            keyed_since TEXT NOT NULL,
            thread_anchored_until INTEGER NOT NULL DEFAULT 0
        );
        INSERT INTO audit_chain (id, legacy_until, keyed_since, thread_anchored_until)
            SELECT 1, COALESCE(MAX(id), 0), strftime('%Y-%m-%dT%H:%M:%SZ', 'now'), COALESCE(MAX(id), 0) FROM events;
        CREATE TRIGGER audit_chain_legacy_fixed BEFORE UPDATE OF legacy_until ON audit_chain
            BEGIN SELECT RAISE(ABORT, 'the legacy prefix of the incident log is fixed'); END;
    """)


MIGRATIONS = (_create_incident_tables,)
"""This module's first schema change; ``keyed_audit_chain`` (5) is listed after the others in ``bot.server.schema``."""


# -- the audit key ------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditKey:
    """The HMAC key of the event chain and of approval plans; never logged, never stored in the database."""

    secret: bytes = field(repr=False)
    source: str
    """Where it came from (a setting's name or a file path), for messages."""

    def mac(self, message: bytes) -> str:
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    @classmethod
    def generate(cls, source: str = "ephemeral") -> AuditKey:
        return cls(secrets.token_hex(32).encode(), source)


def audit_key_path(db_path: str | os.PathLike) -> Path:
    """Where a generated audit key lives: next to the database, in its data directory."""
    path = Path(db_path)
    return path.with_name(path.name + ".audit-key")


def load_audit_key(configured: str | None, db_path: str | os.PathLike, *, create: bool = True) -> AuditKey:
    """The configured key (MESHBOT_AUDIT_KEY / _FILE), else the generated one next to the database.

    The first start without a configured key writes a new random key with mode 0600 and says so: the log
    can only be verified with it, so it must be backed up (or MESHBOT_AUDIT_KEY set from a Secret)."""
    if configured:
        if len(configured) < AUDIT_KEY_MIN_CHARS:
            raise UserError(f"MESHBOT_AUDIT_KEY must be at least {AUDIT_KEY_MIN_CHARS} characters")
        return AuditKey(configured.encode(), "MESHBOT_AUDIT_KEY")
    if not has_local_file(db_path):  # in memory, or PostgreSQL (a URL)
        return AuditKey.generate()
    path = audit_key_path(db_path)
    if not create and not path.exists():
        raise UserError(f"no audit key: set MESHBOT_AUDIT_KEY(_FILE) or restore {path} (without the key the log "
                        "cannot be verified)")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key_file(path)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    log.warning("generated a new audit key at %s (mode 0600): the incident log is signed with it and can only be "
                "verified with it; back it up, or set MESHBOT_AUDIT_KEY(_FILE) from a Secret", path)
    return _read_key_file(path)


def _read_key_file(path: Path) -> AuditKey:
    text = path.read_text(encoding="ascii").strip()
    if len(text) < AUDIT_KEY_MIN_CHARS:
        raise UserError(f"audit key file {path} is shorter than {AUDIT_KEY_MIN_CHARS} characters")
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("audit key file %s is readable by other users; chmod 600 it", path)
    return AuditKey(text.encode(), str(path))


# -- anchors: the head of the chain, kept outside the database ----------------------------------


@dataclass(frozen=True)
class Anchor:
    """The chain's head at one moment: whoever later holds a shorter or rewritten chain is caught by it."""

    event_id: int
    hash_prefix: str
    at: datetime
    legacy_until: int = 0
    replica: str = ""
    """Whose database the anchor is of (replicas with leader election keep one each)."""

    def to_json(self) -> str:
        return json.dumps({"event": self.event_id, "hash": self.hash_prefix, "at": iso(self.at),
                           "legacy_until": self.legacy_until, "replica": self.replica}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Anchor:
        data = json.loads(text)
        return cls(int(data["event"]), str(data["hash"]), parse_time(data["at"]), int(data.get("legacy_until", 0)),
                   str(data.get("replica") or ""))

    @property
    def line(self) -> str:
        """What the incident thread shows."""
        return f"Audit log head: event #{self.event_id} \u00b7 {self.hash_prefix} ({iso(self.at)})"


class AnchorStore(Protocol):
    """Somewhere outside the database that keeps the latest anchor."""

    name: str

    def publish(self, anchor: Anchor) -> None: ...

    def latest(self) -> Anchor | None: ...


@dataclass
class FileAnchorStore:
    """The latest anchor in a small JSON file (next to the database, or on another volume)."""

    path: Path
    name: str = "file"

    def publish(self, anchor: Anchor) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            temporary.write_text(anchor.to_json() + "\n", encoding="utf-8")
            os.replace(temporary, self.path)  # atomic: a crash leaves the old anchor or the new, never half
        except OSError as exc:
            log.warning("could not write the audit anchor %s: %s", self.path, exc.strerror)

    def latest(self) -> Anchor | None:
        try:
            return Anchor.from_json(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"audit anchor {self.path} is unreadable ({exc}); it may have been tampered with") \
                from None


@dataclass
class LeaseAnchorStore:
    """The latest anchor as an annotation of the scheduler's Lease, which meshbot already owns.

    Written through the leader elector (its lock and its read-then-conditional-patch), so it never races the
    elector's own renewals and notes; only the leader writes.  Each replica has a database of its own, so an
    anchor names its replica and a replica compares its chain only with its own."""

    elector: LeaderElector
    name: str = "lease"

    def publish(self, anchor: Anchor) -> None:
        mine = Anchor(anchor.event_id, anchor.hash_prefix, anchor.at, anchor.legacy_until, self.elector.identity)
        self.elector.annotate(ANCHOR_ANNOTATION, mine.to_json())  # False (logged) when not leading

    def latest(self) -> Anchor | None:
        elector = self.elector
        try:
            lease = elector.client.get("Lease", elector.namespace, elector.name)
        except MeshbotError as exc:
            raise UserError(f"cannot read the audit anchor on Lease {elector.namespace}/{elector.name}: {exc}") \
                from None
        text = ((lease.get("metadata") or {}).get("annotations") or {}).get(ANCHOR_ANNOTATION)
        try:
            anchor = Anchor.from_json(text) if text else None
        except (ValueError, KeyError, TypeError):
            raise UserError(f"annotation {ANCHOR_ANNOTATION} on Lease {elector.namespace}/{elector.name} is not an "
                            "anchor; it may have been tampered with") from None
        return anchor if anchor and anchor.replica == elector.identity else None


def default_anchor_stores(db_path: str | os.PathLike) -> tuple[AnchorStore, ...]:
    if not has_local_file(db_path):  # in memory, or PostgreSQL (a URL)
        return ()
    path = Path(db_path)
    return (FileAnchorStore(path.with_name(path.name + ".anchor")),)


@dataclass(frozen=True)
class Incident:
    id: int
    group_key: str
    title: str
    severity: str
    status: IncidentStatus
    channel: str | None
    top_message: int | None
    opened_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    labels: Mapping[str, str]
    namespaces: tuple[str, ...]
    services: tuple[str, ...]
    external_url: str
    playbook: str | None
    diagnosed: bool
    source: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Incident:
        return cls(id=row["id"], group_key=row["group_key"], title=row["title"], severity=row["severity"],
                   status=IncidentStatus(row["status"]), channel=row["channel"], top_message=row["top_message"],
                   opened_at=parse_time(row["opened_at"]), resolved_at=parse_time(row["resolved_at"]),
                   resolved_by=row["resolved_by"], labels=json.loads(row["labels"]),
                   namespaces=tuple(json.loads(row["namespaces"])), services=tuple(json.loads(row["services"])),
                   external_url=row["external_url"], playbook=row["playbook"], diagnosed=bool(row["diagnosed"]),
                   source=row["source"])

    def duration(self, now: datetime) -> str:
        end = self.resolved_at or now
        minutes = int((end - self.opened_at).total_seconds() // 60)
        hours, minutes = divmod(minutes, 60)
        days, hours = divmod(hours, 24)
        parts = [f"{days}d"] * bool(days) + [f"{hours}h"] * bool(hours) + [f"{minutes}m"]
        return " ".join(parts)


@dataclass(frozen=True)
class Event:
    id: int
    incident_id: int | None
    at: datetime
    actor: str
    kind: str
    data: Mapping[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Event:
        return cls(id=row["id"], incident_id=row["incident_id"], at=parse_time(row["at"]), actor=row["actor"],
                   kind=row["kind"], data=json.loads(row["data"]), prev_hash=row["prev_hash"], hash=row["hash"])

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "incident_id": self.incident_id, "at": iso(self.at), "actor": self.actor,
                "kind": self.kind, "data": dict(self.data), "prev_hash": self.prev_hash, "hash": self.hash}


@dataclass(frozen=True)
class ChainReport:
    events: int
    broken_at: int | None = None
    reason: str | None = None
    unkeyed: int = 0
    """Events 1..unkeyed were written before the audit key (plain SHA-256)."""
    anchors: tuple[str, ...] = ()
    """Each anchor the chain was compared with, as 'file: event #131 at 04:12 UTC'."""

    @property
    def intact(self) -> bool:
        return self.broken_at is None

    def lines(self) -> list[str]:
        """What ``meshbot incidents verify`` prints."""
        if not self.intact:
            out = [f"incident log TAMPERED: event {self.broken_at}: {self.reason} ({self.events} events checked)"]
        else:
            out = [f"incident log intact: {self.events} events, hash chain verified (HMAC-SHA256 with the audit key)"]
        if self.unkeyed:
            out.append(f"events 1\u2013{self.unkeyed} are unkeyed (written before the audit key): "
                       "they show edits, not a recomputed chain")
        out += [f"anchor {a}" for a in self.anchors]
        if self.intact and not self.anchors:
            out.append("no anchor found outside the database: deleting the newest events would not be detected")
        return out


def iso(moment: datetime | None) -> str | None:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z") if moment else None


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _canonical_event(prev_hash: str, incident_id: int | None, at: str, actor: str, kind: str, data: str) -> bytes:
    return json.dumps([prev_hash, incident_id, at, actor, kind, data], separators=(",", ":")).encode()


def event_hash(prev_hash: str, incident_id: int | None, at: str, actor: str, kind: str, data: str) -> str:
    """SHA-256 over the previous hash and this event's canonical content (events from before the audit key)."""
    return hashlib.sha256(_canonical_event(prev_hash, incident_id, at, actor, kind, data)).hexdigest()


def event_mac(key: AuditKey, prev_hash: str, incident_id: int | None, at: str, actor: str, kind: str,
              data: str) -> str:
    """HMAC-SHA256 with the audit key over the same content: recomputing it needs the key."""
    return key.mac(_canonical_event(prev_hash, incident_id, at, actor, kind, data))


def _anchor_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%H:%M UTC on %Y-%m-%d")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# -- storing webhook bodies (group commit) ---------------------------------------------------


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

    def __init__(self, database: Database):
        self.database = database
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
        return mine.id

    def _commit_group(self) -> None:
        with self._lock:
            group, self._queue = self._queue, []
        try:
            with self.database.transaction() as db:
                for waiting in group:
                    waiting.id = db.execute("INSERT INTO notifications (received_at, group_key, status, body) "
                                            "VALUES (?, ?, ?, ?)", list(waiting.row)).lastrowid
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


@dataclass
class IncidentLog:
    database: Database
    clock: Callable[[], datetime] = field(default=utcnow)
    key: AuditKey | None = None
    """None: the key generated next to the database (``load_audit_key``)."""
    anchor_stores: tuple[AnchorStore, ...] | None = None
    """None: the anchor file next to the database."""
    anchor_every: timedelta = ANCHOR_EVERY
    _last_anchor: Anchor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.key is None:
            self.key = load_audit_key(None, self.database.path)
        if self.anchor_stores is None:
            self.anchor_stores = default_anchor_stores(self.database.path)

    # -- events -------------------------------------------------------------------

    def append(self, db: sqlite_utils.Database, incident_id: int | None, actor: str, kind: EventKind | str,
               data: Mapping[str, Any] | None = None) -> int:
        """Append an event inside the caller's ``database.transaction()`` (which serialises the chain)."""
        row = db.execute("SELECT hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
        prev = row[0] if row else GENESIS
        at = iso(self.clock())
        payload = json.dumps(dict(data or {}), sort_keys=True, default=str)
        digest = event_mac(self.key, prev, incident_id, at, actor, str(kind), payload)
        cursor = db.execute("INSERT INTO events (incident_id, at, actor, kind, data, prev_hash, hash) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)", [incident_id, at, actor, str(kind), payload, prev, digest])
        return cursor.lastrowid

    def record(self, incident_id: int | None, actor: str, kind: EventKind | str,
               data: Mapping[str, Any] | None = None) -> int:
        with self.database.transaction() as db:
            return self.append(db, incident_id, actor, kind, data)

    def timeline(self, incident_id: int) -> list[Event]:
        rows = self.database.db.query("SELECT * FROM events WHERE incident_id = ? ORDER BY id", [incident_id])
        return [Event.from_row(r) for r in rows]

    def legacy_until(self, db: sqlite_utils.Database | None = None) -> int:
        row = (db or self.database.db).execute("SELECT legacy_until FROM audit_chain WHERE id = 1").fetchone()
        return row[0] if row else 0

    def verify(self, anchors: Sequence[AnchorStore] | None = None) -> ChainReport:
        """Recompute the chain, then compare its head with every anchor kept outside the database."""
        legacy_until = self.legacy_until()
        prev, count, last_id = GENESIS, 0, 0
        stores = self.anchor_stores if anchors is None else anchors
        named = [(store.name, anchor) for store in stores if (anchor := store.latest()) is not None]
        wanted = {anchor.event_id for _, anchor in named}
        seen: dict[int, str] = {}
        for row in self.database.db.query("SELECT * FROM events ORDER BY id"):
            count += 1
            broken = self._check_event(row, prev, legacy_until)
            if broken:
                return ChainReport(count, row["id"], broken, unkeyed=legacy_until)
            if row["id"] in wanted:
                seen[row["id"]] = row["hash"]
            prev, last_id = row["hash"], row["id"]
        described = []
        for store, anchor in sorted(named, key=lambda item: -item[1].event_id):
            where = f"the anchor of {_anchor_time(anchor.at)} ({store})"
            broken_at, reason = self._against_anchor(anchor, where, last_id, seen, legacy_until)
            if reason:
                return ChainReport(count, broken_at, reason, unkeyed=legacy_until)
            described.append(f"{store}: event #{anchor.event_id} of {_anchor_time(anchor.at)} matches")
        return ChainReport(count, unkeyed=legacy_until, anchors=tuple(described))

    def _check_event(self, row: Mapping[str, Any], prev: str, legacy_until: int) -> str | None:
        if row["prev_hash"] != prev:
            return "prev_hash does not match the previous event (an event was removed or reordered)"
        content = (prev, row["incident_id"], row["at"], row["actor"], row["kind"], row["data"])
        if row["id"] <= legacy_until:
            if row["hash"] != event_hash(*content):
                return "content does not match its hash (the event was edited)"
            return None
        if not hmac.compare_digest(row["hash"], event_mac(self.key, *content)):
            return ("content does not match its hash (HMAC-SHA256 with the audit key): the event was edited, "
                    "or the chain was recomputed without the key")
        return None

    @staticmethod
    def _against_anchor(anchor: Anchor, where: str, last_id: int, seen: Mapping[int, str],
                        legacy_until: int) -> tuple[int | None, str | None]:
        if anchor.event_id > last_id:
            return last_id + 1, (f"chain ends at #{last_id} but {where} names #{anchor.event_id}: "
                                 "events were deleted from the end of the log")
        if anchor.event_id not in seen:
            return anchor.event_id, f"{where} names #{anchor.event_id}, which is missing from the log"
        if not seen[anchor.event_id].startswith(anchor.hash_prefix):
            return anchor.event_id, (f"event #{anchor.event_id} does not match {where}: the chain was rewritten "
                                     "(recomputed) from there on or before")
        if legacy_until > anchor.legacy_until:
            return anchor.legacy_until + 1, (f"the log says events 1\u2013{legacy_until} are unkeyed but {where} "
                                             f"says only 1\u2013{anchor.legacy_until} were")
        return None, None

    # -- anchoring the head outside the database -----------------------------------------

    def head(self, db: sqlite_utils.Database | None = None) -> Anchor | None:
        """The newest event as an anchor (None while the log is empty)."""
        db = db or self.database.db
        row = db.execute("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return Anchor(row[0], row[1][:ANCHOR_PREFIX_CHARS], self.clock(), self.legacy_until(db))

    def anchor_if_due(self) -> Anchor | None:
        """Publish the head to every anchor store when it moved and a state changed or ``anchor_every`` passed."""
        head = self.head()
        last = self._last_anchor
        if head is None or (last is not None and head.event_id == last.event_id):
            return None
        state_changed = self.database.db.execute(
            "SELECT 1 FROM events WHERE id > ? AND kind IN (?, ?) LIMIT 1",
            [last.event_id if last else 0, *STATE_CHANGE_KINDS]).fetchone()
        if last is not None and not state_changed and head.at - last.at < self.anchor_every:
            return None
        return self.anchor_now(head)

    def anchor_now(self, head: Anchor | None = None) -> Anchor | None:
        head = head or self.head()
        if head is None:
            return None
        for store in self.anchor_stores:
            store.publish(head)
        self._last_anchor = head
        return head

    # -- incidents ----------------------------------------------------------------

    def get(self, incident_id: int) -> Incident:
        rows = list(self.database.db.query("SELECT * FROM incidents WHERE id = ?", [incident_id]))
        if not rows:
            raise UserError(f"there is no incident #{incident_id}")
        return Incident.from_row(rows[0])

    def get_in(self, db: sqlite_utils.Database, incident_id: int) -> Incident:
        """Read inside the caller's transaction (sees its uncommitted writes)."""
        rows = list(db.query("SELECT * FROM incidents WHERE id = ?", [incident_id]))
        if not rows:
            raise UserError(f"there is no incident #{incident_id}")
        return Incident.from_row(rows[0])

    def open_for_group(self, db: sqlite_utils.Database, group_key: str) -> Incident | None:
        rows = list(db.query("SELECT * FROM incidents WHERE group_key = ? AND status = 'open'", [group_key]))
        return Incident.from_row(rows[0]) if rows else None

    def resolutions_without_incident(self, db: sqlite_utils.Database, group_key: str, limit: int = 50) -> list[str]:
        """Bodies of the group's latest resolved notifications that found no open incident (they came first)."""
        return [r[0] for r in db.execute(
            "SELECT body FROM notifications WHERE group_key = ? AND status = 'resolved' AND processed_at IS NOT NULL "
            "AND error = 'no incident to update' ORDER BY id DESC LIMIT ?", [group_key, limit])]

    def list_open(self) -> list[Incident]:
        rows = self.database.db.query("SELECT * FROM incidents WHERE status = 'open' ORDER BY id")
        return [Incident.from_row(r) for r in rows]

    def list_all(self, limit: int = 100) -> list[Incident]:
        rows = self.database.db.query("SELECT * FROM incidents ORDER BY id DESC LIMIT ?", [limit])
        return [Incident.from_row(r) for r in rows]

    def undiagnosed(self) -> list[Incident]:
        rows = self.database.db.query("SELECT * FROM incidents WHERE status = 'open' AND diagnosed = 0 ORDER BY id")
        return [Incident.from_row(r) for r in rows]

    def create(self, db: sqlite_utils.Database, *, group_key: str, title: str, severity: str, channel: str | None,
               labels: Mapping[str, str], namespaces: Sequence[str], services: Sequence[str], external_url: str,
               playbook: str | None, source: str = "alertmanager") -> int:
        cursor = db.execute(
            "INSERT INTO incidents (group_key, title, severity, status, channel, opened_at, labels, namespaces, "
            "services, external_url, playbook, source) VALUES (?, ?, ?, 'open', ?, ?, ?, ?, ?, ?, ?, ?)",
            [group_key, title, severity, channel, iso(self.clock()), json.dumps(dict(labels), sort_keys=True),
             json.dumps(list(namespaces)), json.dumps(list(services)), external_url, playbook, source])
        return cursor.lastrowid

    def set_top_message(self, db: sqlite_utils.Database, incident_id: int, outbox_id: int) -> None:
        db.execute("UPDATE incidents SET top_message = ? WHERE id = ?", [outbox_id, incident_id])

    def mark_diagnosed(self, db: sqlite_utils.Database, incident_id: int) -> None:
        db.execute("UPDATE incidents SET diagnosed = 1 WHERE id = ?", [incident_id])

    def close(self, db: sqlite_utils.Database, incident_id: int, actor: str, reason: str) -> bool:
        """Resolve an open incident; False when it was already resolved (nothing written)."""
        cursor = db.execute("UPDATE incidents SET status = 'resolved', resolved_at = ?, resolved_by = ? "
                            "WHERE id = ? AND status = 'open'", [iso(self.clock()), actor, incident_id])
        if cursor.rowcount == 0:
            return False
        self.append(db, incident_id, actor, EventKind.STATE_CHANGED, {"from": "open", "to": "resolved",
                                                                      "reason": reason})
        return True

    def reopen(self, db: sqlite_utils.Database, incident_id: int, actor: str, reason: str) -> bool:
        """Open a resolved incident again; False when it is not resolved (nothing written)."""
        cursor = db.execute("UPDATE incidents SET status = 'open', resolved_at = NULL, resolved_by = NULL "
                            "WHERE id = ? AND status = 'resolved'", [incident_id])
        if cursor.rowcount == 0:
            return False
        self.append(db, incident_id, actor, EventKind.STATE_CHANGED, {"from": "resolved", "to": "open",
                                                                      "reason": reason})
        return True
