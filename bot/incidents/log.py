"""The incident log: incidents, their alerts, and an append-only, hash-chained timeline of events.

Every event stores the hash of the one before it, so editing or deleting a
row anywhere but the very end breaks the chain, and ``meshbot incidents
verify`` says where.  SQLite triggers refuse UPDATE and DELETE on events.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

import sqlite_utils

from bot.storage.database import Database, migration
from commands.errors import UserError

GENESIS = "0" * 64


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


MIGRATIONS = (_create_incident_tables,)
"""This module's schema changes, oldest first; ``bot.server.schema`` puts every module's in one list."""


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

    @property
    def intact(self) -> bool:
        return self.broken_at is None


def iso(moment: datetime | None) -> str | None:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z") if moment else None


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def event_hash(prev_hash: str, incident_id: int | None, at: str, actor: str, kind: str, data: str) -> str:
    """SHA-256 over the previous hash and this event's canonical content."""
    canonical = json.dumps([prev_hash, incident_id, at, actor, kind, data], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class IncidentLog:
    database: Database
    clock: Callable[[], datetime] = field(default=utcnow)

    # -- events -------------------------------------------------------------------

    def append(self, db: sqlite_utils.Database, incident_id: int | None, actor: str, kind: EventKind | str,
               data: Mapping[str, Any] | None = None) -> int:
        """Append an event inside the caller's ``database.transaction()`` (which serialises the chain)."""
        row = db.execute("SELECT hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
        prev = row[0] if row else GENESIS
        at = iso(self.clock())
        payload = json.dumps(dict(data or {}), sort_keys=True, default=str)
        digest = event_hash(prev, incident_id, at, actor, str(kind), payload)
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

    def verify(self) -> ChainReport:
        """Recompute the whole chain; the first event whose hash or link does not match breaks it."""
        prev, count = GENESIS, 0
        for row in self.database.db.query("SELECT * FROM events ORDER BY id"):
            count += 1
            if row["prev_hash"] != prev:
                return ChainReport(count, row["id"], "prev_hash does not match the previous event "
                                                     "(an event was removed or reordered)")
            expected = event_hash(prev, row["incident_id"], row["at"], row["actor"], row["kind"], row["data"])
            if row["hash"] != expected:
                return ChainReport(count, row["id"], "content does not match its hash (the event was edited)")
            prev = row["hash"]
        return ChainReport(count)

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
