"""The incident tables and the one module that reads and writes them.

Incidents, their alerts, the hash-chained events (a diagnosis, a refused
command, a posted message… are events) and
the audit chain's bookkeeping row: every SQL statement on these tables is here,
and the store hands out typed records (``Incident``, ``Event``,
``DiagnosisRecord``).  Computing the chain's hashes is the log's
(``bot.incidents.log``); the store only keeps them.  SQLite triggers refuse
UPDATE and DELETE on events.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlite_utils

from bot.incidents.alerts import Alert
from bot.incidents.audit import AuditSeal
from bot.incidents.records import (
    STATE_CHANGE_KINDS,
    DiagnosisRecord,
    Event,
    EventKind,
    Incident,
    IncidentStatus,
    iso,
    utcnow,
)
from bot.storage.database import Database, inserted_id, migration
from commands.errors import UserError


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
        -- Moved to the request path's own file beside a SQLite database by migration 15 (bot.server.schema);
        -- bot.incidents.notifications owns it.
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


@migration(9, "audit seal: the log's identity, its key's check value and the newest rotation, sealed with the key")
def audit_seal(db: sqlite_utils.Database) -> None:
    # Filled (and MAC'd) by the first start with the key: a migration has no key to seal with.
    for column in ("log_id TEXT", "key_check TEXT", "rotated_at INTEGER NOT NULL DEFAULT 0", "seal TEXT"):
        db.execute(f"ALTER TABLE audit_chain ADD COLUMN {column}")


MIGRATIONS = (_create_incident_tables,)
"""This module's first schema change; ``keyed_audit_chain`` (5) and ``audit_seal`` (9) are listed after the others
in ``bot.server.schema``."""


@dataclass
class IncidentStore:
    """All SQL on the incident tables.  Methods that take ``db`` run inside the caller's
    ``database.transaction()`` (and see its uncommitted writes); ``db=None`` reads on their own."""

    database: Database
    clock: Callable[[], datetime] = field(default=utcnow)

    def _reader(self, db: sqlite_utils.Database | None) -> sqlite_utils.Database:
        return db if db is not None else self.database.db

    # -- incidents ----------------------------------------------------------------

    def get(self, incident_id: int) -> Incident:
        return self.get_in(self.database.db, incident_id)

    def get_in(self, db: sqlite_utils.Database, incident_id: int) -> Incident:
        """Read inside the caller's transaction (sees its uncommitted writes)."""
        rows = list(db.query("SELECT * FROM incidents WHERE id = ?", [incident_id]))
        if not rows:
            raise UserError(f"there is no incident #{incident_id}")
        return Incident.from_row(rows[0])

    def exists(self, db: sqlite_utils.Database, incident_id: int) -> bool:
        return db.execute("SELECT 1 FROM incidents WHERE id = ?", [incident_id]).fetchone() is not None

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

    def open_diagnosed_except(self, db: sqlite_utils.Database, incident_id: int) -> list[Incident]:
        """Open, diagnosed incidents other than this one, oldest first (candidates to join)."""
        rows = db.query("SELECT id FROM incidents WHERE status = 'open' AND diagnosed = 1 AND id != ? ORDER BY id",
                        [incident_id])
        return [self.get_in(db, row["id"]) for row in list(rows)]

    def statuses(self, incident_ids: Iterable[int],
                 db: sqlite_utils.Database | None = None) -> dict[int, IncidentStatus]:
        """Each named incident's status (unknown ids are left out)."""
        return {id_: IncidentStatus(value) for id_, value in self._column_of(incident_ids, "status", db).items()}

    def severities(self, incident_ids: Iterable[int]) -> dict[int, str]:
        """Each named incident's severity (unknown ids are left out): the outbox posts the most severe first."""
        return {id_: value or "" for id_, value in self._column_of(incident_ids, "severity").items()}

    def _column_of(self, incident_ids: Iterable[int], column: str,
                   db: sqlite_utils.Database | None = None) -> dict[int, Any]:
        """``column`` of each named incident (unknown ids are left out)."""
        wanted = sorted(set(incident_ids))
        if not wanted:
            return {}
        marks = ", ".join("?" * len(wanted))
        # Only "?" placeholders and a column name from this module are formatted in; the ids travel as parameters.
        rows = self._reader(db).execute(f"SELECT id, {column} FROM incidents WHERE id IN ({marks})",  # noqa: S608
                                        wanted)
        return {row[0]: row[1] for row in rows}

    def create(self, db: sqlite_utils.Database, *, group_key: str, title: str, severity: str, channel: str | None,
               labels: Mapping[str, str], namespaces: Sequence[str], services: Sequence[str], external_url: str,
               playbook: str | None, source: str = "alertmanager") -> int:
        cursor = db.execute(
            "INSERT INTO incidents (group_key, title, severity, status, channel, opened_at, labels, namespaces, "
            "services, external_url, playbook, source) VALUES (?, ?, ?, 'open', ?, ?, ?, ?, ?, ?, ?, ?)",
            [group_key, title, severity, channel, iso(self.clock()), json.dumps(dict(labels), sort_keys=True),
             json.dumps(list(namespaces)), json.dumps(list(services)), external_url, playbook, source])
        return inserted_id(cursor)

    def set_top_message(self, db: sqlite_utils.Database, incident_id: int, outbox_id: int) -> None:
        db.execute("UPDATE incidents SET top_message = ? WHERE id = ?", [outbox_id, incident_id])

    def sharing_top(self, db: sqlite_utils.Database, outbox_id: int) -> list[int]:
        """The incidents whose thread is under this top message, oldest first: the first one posted it, the others
        are part of its conversation (``bot.incidents.conversation``)."""
        return [row["id"] for row in db.query("SELECT id FROM incidents WHERE top_message = ? ORDER BY id",
                                              [outbox_id])]

    def opened_in_channel_since(self, db: sqlite_utils.Database, channel: str, since: datetime) -> list[Incident]:
        """Incidents opened in ``channel`` at or after ``since`` (the log's clock), oldest first (``rollup``)."""
        return [Incident.from_row(row) for row in db.query(
            "SELECT * FROM incidents WHERE channel = ? AND opened_at >= ? ORDER BY id", [channel, iso(since)])]

    def mark_diagnosed(self, db: sqlite_utils.Database, incident_id: int) -> None:
        db.execute("UPDATE incidents SET diagnosed = 1 WHERE id = ?", [incident_id])

    def mark_resolved(self, db: sqlite_utils.Database, incident_id: int, actor: str) -> bool:
        """Set an open incident resolved; False when it was not open (nothing changed)."""
        cursor = db.execute("UPDATE incidents SET status = 'resolved', resolved_at = ?, resolved_by = ? "
                            "WHERE id = ? AND status = 'open'", [iso(self.clock()), actor, incident_id])
        return cursor.rowcount != 0

    def mark_reopened(self, db: sqlite_utils.Database, incident_id: int) -> bool:
        """Set a resolved incident open again; False when it was not resolved (nothing changed)."""
        cursor = db.execute("UPDATE incidents SET status = 'open', resolved_at = NULL, resolved_by = NULL "
                            "WHERE id = ? AND status = 'resolved'", [incident_id])
        return cursor.rowcount != 0

    # -- alerts of an incident (remembered by occurrence: fingerprint + startsAt) ------------

    def alerts(self, incident_id: int, db: sqlite_utils.Database | None = None) -> list[dict[str, Any]]:
        return list(self._reader(db).query("SELECT * FROM incident_alerts WHERE incident_id = ? ORDER BY starts_at",
                                           [incident_id]))

    def alert(self, db: sqlite_utils.Database, incident_id: int, occurrence: str) -> dict[str, Any] | None:
        rows = list(db.query("SELECT * FROM incident_alerts WHERE incident_id = ? AND occurrence = ?",
                             [incident_id, occurrence]))
        return rows[0] if rows else None

    def add_alert(self, db: sqlite_utils.Database, incident_id: int, alert: Alert) -> None:
        """Remember an alert of the incident; one already remembered (same occurrence) is left as it is."""
        db.execute("INSERT OR IGNORE INTO incident_alerts (incident_id, occurrence, fingerprint, alertname, status, "
                   "starts_at, ends_at, summary, labels, generator_url) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   [incident_id, alert.occurrence, alert.fingerprint, alert.name, str(alert.status),
                    iso(alert.starts_at), iso(alert.ends_at), alert.summary,
                    json.dumps(dict(alert.labels), sort_keys=True), alert.generator_url])

    def end_alert(self, db: sqlite_utils.Database, incident_id: int, occurrence: str, ends_at: datetime) -> None:
        db.execute("UPDATE incident_alerts SET status = 'resolved', ends_at = ? WHERE incident_id = ? "
                   "AND occurrence = ?", [iso(ends_at), incident_id, occurrence])

    def resolved_with_occurrence(self, db: sqlite_utils.Database, group_key: str, occurrence: str) -> bool:
        """Whether a resolved incident of this group holds the alert occurrence."""
        return db.execute(
            "SELECT 1 FROM incident_alerts JOIN incidents ON incidents.id = incident_alerts.incident_id "
            "WHERE occurrence = ? AND incidents.group_key = ? AND incidents.status = 'resolved' LIMIT 1",
            [occurrence, group_key]).fetchone() is not None

    def resolved_while_firing(self, db: sqlite_utils.Database, group_key: str,
                              occurrence: str) -> tuple[int, str | None] | None:
        """The newest resolved incident of the group whose alert occurrence still fires: (id, resolved_by)."""
        row = db.execute(
            "SELECT incidents.id, incidents.resolved_by FROM incidents JOIN incident_alerts "
            "ON incidents.id = incident_alerts.incident_id WHERE incidents.group_key = ? "
            "AND incidents.status = 'resolved' AND incident_alerts.status = 'firing' "
            "AND incident_alerts.occurrence = ? ORDER BY incidents.id DESC LIMIT 1",
            [group_key, occurrence]).fetchone()
        return (row[0], row[1]) if row is not None else None

    # -- events (the hash chain's rows; their hashes are computed by the log) -----------------

    def last_hash(self, db: sqlite_utils.Database) -> str | None:
        row = db.execute("SELECT hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
        return row[0] if row else None

    def insert_event(self, db: sqlite_utils.Database, incident_id: int | None, at: str, actor: str, kind: str,
                     data: str, prev_hash: str, digest: str) -> int:
        cursor = db.execute("INSERT INTO events (incident_id, at, actor, kind, data, prev_hash, hash) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)", [incident_id, at, actor, kind, data, prev_hash, digest])
        return inserted_id(cursor)

    def timeline(self, incident_id: int, db: sqlite_utils.Database | None = None) -> list[Event]:
        rows = self._reader(db).query("SELECT * FROM events WHERE incident_id = ? ORDER BY id", [incident_id])
        return [Event.from_row(r) for r in rows]

    def chain_rows(self) -> Iterator[dict[str, Any]]:
        """Every event row in chain order, for verifying."""
        return self.database.db.query("SELECT * FROM events ORDER BY id")

    def newest_event(self, db: sqlite_utils.Database | None = None) -> tuple[int, str] | None:
        """The last event's (id, hash); None while the log is empty."""
        row = self._reader(db).execute("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
        return (row[0], row[1]) if row is not None else None

    def state_changed_after(self, event_id: int) -> bool:
        """Whether an incident opened or changed state after this event."""
        return self.database.db.execute(
            "SELECT 1 FROM events WHERE id > ? AND kind IN (?, ?) LIMIT 1",
            [event_id, *STATE_CHANGE_KINDS]).fetchone() is not None

    def state_changes_between(self, after: int, until: int) -> list[int]:
        """Incidents that changed state (resolved, reopened) in events ``after`` < id <= ``until``."""
        return [r[0] for r in self.database.db.execute(
            "SELECT DISTINCT incident_id FROM events WHERE id > ? AND id <= ? AND kind = ? AND incident_id IS NOT NULL",
            [after, until, str(EventKind.STATE_CHANGED)])]

    def latest_diagnosis(self, incident_id: int, db: sqlite_utils.Database | None = None) -> DiagnosisRecord | None:
        """What the incident's last diagnosis stored (it carries the triage), or None before its first."""
        row = self._reader(db).execute(
            "SELECT data FROM events WHERE incident_id = ? AND kind = ? ORDER BY id DESC LIMIT 1",
            [incident_id, str(EventKind.DIAGNOSTICS_RUN)]).fetchone()
        return DiagnosisRecord.from_data(json.loads(row[0])) if row else None

    # -- the audit chain's bookkeeping row ---------------------------------------------------

    def legacy_until(self, db: sqlite_utils.Database | None = None) -> int:
        """Events 1..this were written before the audit key (plain SHA-256)."""
        row = self._reader(db).execute("SELECT legacy_until FROM audit_chain WHERE id = 1").fetchone()
        return row[0] if row else 0

    def thread_anchored_until(self, db: sqlite_utils.Database | None = None) -> int | None:
        """The newest event whose head was posted in incident threads; None before the keyed chain's migration."""
        row = self._reader(db).execute("SELECT thread_anchored_until FROM audit_chain WHERE id = 1").fetchone()
        return row[0] if row else None

    def set_thread_anchored_until(self, db: sqlite_utils.Database, event_id: int) -> None:
        db.execute("UPDATE audit_chain SET thread_anchored_until = ? WHERE id = 1", [event_id])

    def seal(self, db: sqlite_utils.Database | None = None) -> AuditSeal | None:
        """The audit chain's row; None when it is missing (deleted: nothing then says where the prefix ends)."""
        row = self._reader(db).execute("SELECT legacy_until, log_id, key_check, rotated_at, seal FROM audit_chain "
                                       "WHERE id = 1").fetchone()
        return AuditSeal(row[0], row[1], row[2], row[3], row[4]) if row is not None else None

    def write_seal(self, db: sqlite_utils.Database, seal: AuditSeal, *, first: bool) -> bool:
        """Store the sealed row; ``first``: only while it was never sealed (two replicas starting at once seal
        once).  The legacy boundary itself never changes (a trigger refuses it)."""
        update = "UPDATE audit_chain SET log_id = ?, key_check = ?, rotated_at = ?, seal = ? WHERE id = 1"
        cursor = db.execute(f"{update} AND seal IS NULL" if first else update,  # noqa: S608 (constants only)
                            [seal.log_id, seal.key_check, seal.rotated_at, seal.mac])
        return cursor.rowcount == 1

    def event_row(self, db: sqlite_utils.Database, event_id: int) -> dict[str, Any] | None:
        rows = list(db.query("SELECT * FROM events WHERE id = ?", [event_id]))
        return rows[0] if rows else None

    def event_rows(self, db: sqlite_utils.Database, incident_id: int, kinds: Sequence[str]) -> list[dict[str, Any]]:
        """An incident's events of these kinds, each with the hash of the event before it (``before``)."""
        marks = ", ".join("?" * len(kinds))
        # Only "?" placeholders are formatted in; the kinds travel as parameters.
        before = "(SELECT p.hash FROM events p WHERE p.id < e.id ORDER BY p.id DESC LIMIT 1) AS before"
        sql = f"SELECT e.*, {before} FROM events e WHERE e.incident_id = ? AND e.kind IN ({marks}) ORDER BY e.id"  # noqa: S608
        return list(db.query(sql, [incident_id, *kinds]))

    def kind_rows(self, kinds: Sequence[str]) -> list[dict[str, Any]]:
        """Every event of these kinds, in chain order (few: rotations, alarms, incident and approval milestones)."""
        marks = ", ".join("?" * len(kinds))
        return list(self.database.db.query(f"SELECT * FROM events WHERE kind IN ({marks}) ORDER BY id",  # noqa: S608
                                           list(kinds)))

    def incident_rows(self) -> list[dict[str, Any]]:
        """Every incident's fields the log also records (to compare them with it)."""
        return list(self.database.db.query("SELECT id, title, severity, status, resolved_by FROM incidents "
                                           "ORDER BY id"))

    def newest_event_id(self) -> int:
        return self.database.db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
