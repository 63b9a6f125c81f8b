"""An incident's lifecycle beyond open/resolved: severity, a lead, stage updates with a note, follow-ups.

incident.io and PagerDuty users expect a lead who owns the incident, status updates (Investigating -> Fixing
-> Monitoring -> Resolved) with a short note, Mitigated as a state of its own (time to mitigate is not time to
resolve) and follow-ups for the postmortem.  This module owns the two tables that hold them (the incident row
keeps the alert's severity as the audit chain recorded it); every change is also an event in the incident log,
so the postmortem draft reads the whole story from the timeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import sqlite_utils

from bot.incidents.records import iso, parse_time, stored_time
from bot.storage.database import Database, migration


class Stage(StrEnum):
    """Where the response stands while the incident is open (resolving it is ``/mesh incident resolve``)."""

    INVESTIGATING = "investigating"
    FIXING = "fixing"
    MITIGATED = "mitigated"
    """Users are no longer hurt (traffic restored, a workaround in place); the cause may still be there."""
    MONITORING = "monitoring"

    @property
    def label(self) -> str:
        return self.value.capitalize()


SEVERITIES = ("critical", "error", "warning", "info")
"""What ``/mesh incident severity`` accepts: Alertmanager's usual ``severity`` label values."""


@migration(13, "incident lifecycle (severity set by people, lead, stage, when mitigated) and follow-ups")
def lifecycle_tables(db: sqlite_utils.Database) -> None:
    db.executescript("""
        CREATE TABLE incident_lifecycle (
            incident_id BIGINT NOT NULL PRIMARY KEY REFERENCES incidents(id),  -- not a rowid alias: set, never generated
            severity TEXT,
            lead TEXT,
            stage TEXT NOT NULL DEFAULT 'investigating',
            stage_note TEXT,
            mitigated_at TEXT,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE incident_followups (
            id INTEGER PRIMARY KEY,
            incident_id INTEGER NOT NULL REFERENCES incidents(id),
            text TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX incident_followups_by_incident ON incident_followups(incident_id);
    """)


@dataclass(frozen=True)
class Lifecycle:
    """What people set on an incident; an incident nobody touched is investigating, with the alert's severity."""

    severity: str | None = None
    """Set by a person (``/mesh incident severity``); None: the alert's."""
    lead: str | None = None
    stage: Stage = Stage.INVESTIGATING
    stage_note: str | None = None
    mitigated_at: datetime | None = None


@dataclass(frozen=True)
class FollowUp:
    id: int
    text: str
    created_by: str
    created_at: datetime


@dataclass
class LifecycleStore:
    """All SQL on ``incident_lifecycle`` and ``incident_followups``; writes run in the caller's transaction."""

    database: Database

    def get(self, incident_id: int, db: sqlite_utils.Database | None = None) -> Lifecycle:
        reader = db if db is not None else self.database.db
        rows = list(reader.query("SELECT severity, lead, stage, stage_note, mitigated_at FROM incident_lifecycle "
                                 "WHERE incident_id = ?", [incident_id]))
        if not rows:
            return Lifecycle()
        row = rows[0]
        return Lifecycle(row["severity"], row["lead"], Stage(row["stage"]), row["stage_note"],
                         parse_time(row["mitigated_at"]))

    def save(self, db: sqlite_utils.Database, incident_id: int, lifecycle: Lifecycle, now: datetime) -> None:
        values = [lifecycle.severity, lifecycle.lead, str(lifecycle.stage), lifecycle.stage_note,
                  iso(lifecycle.mitigated_at), iso(now), incident_id]
        updated = db.execute("UPDATE incident_lifecycle SET severity = ?, lead = ?, stage = ?, stage_note = ?, "
                             "mitigated_at = ?, updated_at = ? WHERE incident_id = ?", values)
        if updated.rowcount == 0:
            db.execute("INSERT INTO incident_lifecycle (severity, lead, stage, stage_note, mitigated_at, updated_at, "
                       "incident_id) VALUES (?, ?, ?, ?, ?, ?, ?)", values)

    def add_follow_up(self, db: sqlite_utils.Database, incident_id: int, text: str, user: str, now: datetime) -> None:
        db.execute("INSERT INTO incident_followups (incident_id, text, created_by, created_at) VALUES (?, ?, ?, ?)",
                   [incident_id, text, user, iso(now)])

    def follow_ups(self, incident_id: int, db: sqlite_utils.Database | None = None) -> list[FollowUp]:
        reader = db if db is not None else self.database.db
        return [FollowUp(r["id"], r["text"], r["created_by"], stored_time(r["created_at"]))
                for r in reader.query("SELECT id, text, created_by, created_at FROM incident_followups "
                                      "WHERE incident_id = ? ORDER BY id", [incident_id])]
