"""Certificate-expiry reminders: scan, decide what is due, post each (certificate, threshold) once.

The ledger of what was posted lives in SQLite and is written in the same
transaction that queues the Slack message in the outbox, so a restart neither
loses nor repeats a reminder.  An expired mesh root also opens an incident
(once per certificate), with its own thread, diagnostics and log.

With leader election, replicas do not share a database: the leader also copies
the ledger onto the Lease (``LeaseLedger``), so a replica that takes over does
not post again what the previous leader posted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import sqlite_utils

from bot.cluster import ClusterAccess
from bot.incidents.log import IncidentLog
from bot.incidents.records import EventKind, iso
from bot.reminders import blocks as reminder_blocks
from bot.slack.outbox import Outbox
from bot.storage.database import Database, migration
from bot.storage.dialect import Lock, lock_key
from commands.certificates.reminders import (
    DEFAULT_DAYS,
    Expiry,
    LedgerError,
    Reminder,
    decode_ledger,
    due,
    encode_ledger,
    slots_covered,
    upcoming,
)
from commands.checks.certs import certificate_inventory, certs
from commands.checks.registry import CheckContext
from commands.clients.lease import LeaderElector

log = logging.getLogger(__name__)

INCIDENT_SLOT = "incident"
MESHBOT = "meshbot"
LEDGER_ANNOTATION = "meshbot.io/reminders-sent"
MAX_LEDGER_CHARS = 200_000
"""Annotations of one object may total 256 KiB; about 2,000 certificates fit below this."""


@migration(4, "certificate reminders already posted")
def _create_reminder_ledger(db: sqlite_utils.Database) -> None:
    db.executescript("""
        CREATE TABLE reminders_sent (
            cert_key TEXT NOT NULL,
            slot TEXT NOT NULL,
            sent_at TEXT NOT NULL,
            what TEXT NOT NULL,
            not_after TEXT NOT NULL,
            outbox_id INTEGER REFERENCES outbox(id),
            PRIMARY KEY (cert_key, slot)
        );
    """)


MIGRATIONS = (_create_reminder_ledger,)
"""This module's schema changes, oldest first; ``bot.server.schema`` puts every module's in one list."""


@dataclass
class LeaseLedger:
    """The reminder ledger, copied onto the scheduler's Lease for whichever replica leads next."""

    elector: LeaderElector

    def load(self) -> set[tuple[str, str]]:
        """What earlier leaders posted (as of this replica's latest read of the Lease)."""
        try:
            return decode_ledger(self.elector.annotation(LEDGER_ANNOTATION))
        except LedgerError as exc:
            log.warning("ignoring annotation %s on the Lease: %s", LEDGER_ANNOTATION, exc)
            return set()

    def store(self, sent: set[tuple[str, str]], current_keys: Sequence[str], today: date) -> None:
        text = encode_ledger(sent, current_keys, today)
        if len(text) > MAX_LEDGER_CHARS:
            log.warning("reminder ledger is %d characters, too big for annotation %s; a replica taking over "
                        "may repeat reminders", len(text), LEDGER_ANNOTATION)
            return
        if text != self.elector.annotation(LEDGER_ANNOTATION):
            self.elector.annotate(LEDGER_ANNOTATION, text)


def reminder_day(now: datetime) -> date:
    """The day a daily reminder belongs to: the UTC date, whatever MESHBOT_TIMEZONE says.  Replicas in
    different zones share one ledger (the Lease); keyed by a local date, a replica whose zone is already on
    the next day would post that day's reminder again on the same real day.  The zone stays for display."""
    return now.astimezone(timezone.utc).date()


@dataclass(frozen=True)
class ScanResult:
    now: datetime
    expiries: list[Expiry]
    due: list[Reminder]
    problems: list[str]
    incidents_opened: list[int] = field(default_factory=list)


@dataclass
class ReminderService:
    database: Database | None
    """None for a read-only scan (``meshbot remind --once`` without a database)."""
    cluster: ClusterAccess
    channel: str | None
    outbox: Outbox | None = None
    incidents: IncidentLog | None = None
    open_incident: Callable[..., int | None] | None = None
    """IncidentFlow.open_incident; an expired mesh root opens an incident through it."""
    days: Sequence[int] = DEFAULT_DAYS
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    clock: Callable[[], datetime] | None = None
    shared: LeaseLedger | None = None
    """Set with leader election: the ledger as other replicas see it."""

    def now(self) -> datetime:
        return self.clock() if self.clock else self.cluster.now()

    def expiries(self, now: datetime) -> tuple[list[Expiry], list[str]]:
        snapshot = self.cluster.source().snapshot(set(certs.kinds))  # what the certs check reads
        entries, problems = certificate_inventory(CheckContext(snapshot=snapshot, now=now))
        reasons = [f.message for f in snapshot.read_problems] + [f.message for f in problems]
        return upcoming(entries, now), reasons

    def sent(self) -> set[tuple[str, str]]:
        """(certificate key, slot) already posted, by this replica or (with leader election) an earlier leader."""
        shared = self.shared.load() if self.shared else set()
        return self._sent_here() | shared

    def _sent_here(self) -> set[tuple[str, str]]:
        if self.database is None:
            return set()
        return {(r[0], r[1]) for r in self.database.db.execute("SELECT cert_key, slot FROM reminders_sent")}

    def plan(self, now: datetime | None = None) -> ScanResult:
        """What a scan at ``now`` would post (nothing is written)."""
        now = now or self.now()
        expiries, problems = self.expiries(now)
        today = reminder_day(now)
        return ScanResult(now, expiries, due(expiries, today, self.sent(), self.days), problems)

    def scan(self, now: datetime | None = None) -> ScanResult:
        """Scan and post every due reminder once; an expired mesh root opens an incident."""
        result = self.plan(now)
        if self.database is None or self.outbox is None or not self.channel:
            raise RuntimeError("posting reminders needs the database, the outbox and MESHBOT_CHANNEL")
        database, outbox, channel = self.database, self.outbox, self.channel
        today = reminder_day(result.now)
        shared = self.shared.load() if self.shared else set()
        for reminder in result.due:
            self._post(database, outbox, channel, reminder, result.now, today)
        for expiry in result.expiries:
            if expiry.is_mesh_root and expiry.expired and (expiry.key, INCIDENT_SLOT) not in shared:
                incident_id = self._incident_for_expired_root(database, expiry, result.now)
                if incident_id is not None:
                    result.incidents_opened.append(incident_id)
        outbox.wake()
        if self.shared:
            self.shared.store(self._sent_here() | shared, [e.key for e in result.expiries], today)
        log.info("certificate scan: %d certificates, %d reminders posted, %d problems", len(result.expiries),
                 len(result.due), len(result.problems))
        return result

    def _post(self, database: Database, outbox: Outbox, channel: str, reminder: Reminder, now: datetime,
              today) -> None:
        expiry = reminder.expiry
        with database.transaction() as db:
            lock_key(db, Lock.REMINDER, f"{expiry.key}:{reminder.slot}")  # checked, then posted: once per slot
            if db.execute("SELECT 1 FROM reminders_sent WHERE cert_key = ? AND slot = ?",
                          [expiry.key, reminder.slot]).fetchone():
                return  # another scan (a restart, a second trigger) got there first
            entry = outbox.post(db, incident_id=None, channel=channel,
                                message=reminder_blocks.reminder_message(reminder, self.timezone))
            for slot in slots_covered(reminder, today):
                db.execute("INSERT OR IGNORE INTO reminders_sent (cert_key, slot, sent_at, what, not_after, outbox_id) "
                           "VALUES (?, ?, ?, ?, ?, ?)", [expiry.key, slot, iso(now), expiry.what,
                                                         iso(expiry.not_after), entry])
            if self.incidents is not None:
                self.incidents.append(db, None, MESHBOT, EventKind.REMINDER, {
                    "certificate": expiry.to_dict(), "slot": reminder.slot, "outbox_id": entry})

    def _incident_for_expired_root(self, database: Database, expiry: Expiry, now: datetime) -> int | None:
        if self.open_incident is None:
            return None
        with database.transaction() as db:
            if db.execute("SELECT 1 FROM reminders_sent WHERE cert_key = ? AND slot = ?",
                          [expiry.key, INCIDENT_SLOT]).fetchone():
                return None
        incident_id = self.open_incident(
            group_key=f"certificate-expired:{expiry.key}", title=f"{expiry.what} has expired",
            severity="critical", labels={"alertname": "IstioCertificateExpiringSoon", "source": "meshbot",
                                         "namespace": self.cluster.settings.istio_namespace},
            namespaces=list(expiry.namespaces), reason=f"{expiry.what} expired at {iso(expiry.not_after)}")
        with database.transaction() as db:
            db.execute("INSERT OR IGNORE INTO reminders_sent (cert_key, slot, sent_at, what, not_after) "
                       "VALUES (?, ?, ?, ?, ?)", [expiry.key, INCIDENT_SLOT, iso(now), expiry.what,
                                                  iso(expiry.not_after)])
        return incident_id
