"""The incident log: the incident store whose events form an append-only, keyed hash chain.

Appending an event signs it with the audit key over its content and the
previous event's hash (``bot.incidents.audit``); ``verify`` recomputes the
chain and compares its head with the anchors kept outside the database
(``bot.incidents.anchors``), and the head is anchored there as events are
written.  The SQL is the store's (``bot.incidents.store``).  The threat model
is in docs/security.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlite_utils

from bot.incidents.anchors import ANCHOR_EVERY, ANCHOR_PREFIX_CHARS, Anchor, AnchorStore, against_anchor, \
    anchor_time, default_anchor_stores
from bot.incidents.audit import GENESIS, AuditKey, ChainReport, broken_event, event_mac, load_audit_key
from bot.incidents.records import DiagnosisRecord, EventKind, iso
from bot.incidents.store import IncidentStore


@dataclass
class IncidentLog(IncidentStore):
    """The store plus the chain: every event written through ``append`` is signed and chained, and whoever holds
    an incident log (the flow, the approval desk, reminders) reads incidents through the store's methods."""

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

    def _key(self) -> AuditKey:
        if self.key is None:  # __post_init__ loads one: only setting it to None afterwards gets here
            raise RuntimeError("the incident log has no audit key")
        return self.key

    # -- events -------------------------------------------------------------------

    def append(self, db: sqlite_utils.Database, incident_id: int | None, actor: str, kind: EventKind | str,
               data: Mapping[str, Any] | None = None) -> int:
        """Append an event inside the caller's ``database.transaction()`` (which serialises the chain)."""
        prev = self.last_hash(db) or GENESIS
        at = iso(self.clock())
        payload = json.dumps(dict(data or {}), sort_keys=True, default=str)
        digest = event_mac(self._key(), prev, incident_id, at, actor, str(kind), payload)
        return self.insert_event(db, incident_id, at, actor, str(kind), payload, prev, digest)

    def record(self, incident_id: int | None, actor: str, kind: EventKind | str,
               data: Mapping[str, Any] | None = None) -> int:
        with self.database.transaction() as db:
            return self.append(db, incident_id, actor, kind, data)

    def record_diagnosis(self, db: sqlite_utils.Database, incident_id: int, actor: str,
                         diagnosis: DiagnosisRecord) -> int:
        """Store a diagnosis as the incident's ``diagnostics_run`` event and mark the incident diagnosed."""
        event_id = self.append(db, incident_id, actor, EventKind.DIAGNOSTICS_RUN, diagnosis.to_data())
        self.mark_diagnosed(db, incident_id)
        return event_id

    def record_refused_command(self, user: str, channel: str, command: str, request: Mapping[str, str],
                               reason: str, incident_id: int | None = None) -> int:
        """A ``/mesh`` command refused for want of a role, like a refused click: on the incident's timeline when it
        names one that exists, else on no incident's."""
        with self.database.transaction() as db:
            if incident_id is not None and not self.exists(db, incident_id):
                incident_id = None
            return self.append(db, incident_id, user, EventKind.COMMAND_REFUSED, {
                "channel": channel, "command": command, "request": dict(request), "reason": reason})

    def verify(self, anchors: Sequence[AnchorStore] | None = None) -> ChainReport:
        """Recompute the chain, then compare its head with every anchor kept outside the database."""
        legacy_until = self.legacy_until()
        prev, count, last_id = GENESIS, 0, 0
        stores = (self.anchor_stores or ()) if anchors is None else anchors
        named = [(store.name, anchor) for store in stores if (anchor := store.latest()) is not None]
        wanted = {anchor.event_id for _, anchor in named}
        seen: dict[int, str] = {}
        for row in self.chain_rows():
            count += 1
            broken = broken_event(self._key(), row, prev, legacy_until)
            if broken:
                return ChainReport(count, row["id"], broken, unkeyed=legacy_until)
            if row["id"] in wanted:
                seen[row["id"]] = row["hash"]
            prev, last_id = row["hash"], row["id"]
        described = []
        for store, anchor in sorted(named, key=lambda item: -item[1].event_id):
            where = f"the anchor of {anchor_time(anchor.at)} ({store})"
            broken_at, reason = against_anchor(anchor, where, last_id, seen, legacy_until)
            if reason:
                return ChainReport(count, broken_at, reason, unkeyed=legacy_until)
            described.append(f"{store}: event #{anchor.event_id} of {anchor_time(anchor.at)} matches")
        return ChainReport(count, unkeyed=legacy_until, anchors=tuple(described))

    # -- anchoring the head outside the database -----------------------------------------

    def head(self, db: sqlite_utils.Database | None = None) -> Anchor | None:
        """The newest event as an anchor (None while the log is empty)."""
        newest = self.newest_event(db)
        if newest is None:
            return None
        event_id, digest = newest
        return Anchor(event_id, digest[:ANCHOR_PREFIX_CHARS], self.clock(), self.legacy_until(db))

    def anchor_if_due(self) -> Anchor | None:
        """Publish the head to every anchor store when it moved and a state changed or ``anchor_every`` passed."""
        head = self.head()
        last = self._last_anchor
        if head is None or (last is not None and head.event_id == last.event_id):
            return None
        state_changed = self.state_changed_after(last.event_id if last else 0)
        if last is not None and not state_changed and head.at - last.at < self.anchor_every:
            return None
        return self.anchor_now(head)

    def anchor_now(self, head: Anchor | None = None) -> Anchor | None:
        head = head or self.head()
        if head is None:
            return None
        for store in self.anchor_stores or ():
            store.publish(head)
        self._last_anchor = head
        return head

    # -- state changes (each one an event) -----------------------------------------------

    def close(self, db: sqlite_utils.Database, incident_id: int, actor: str, reason: str) -> bool:
        """Resolve an open incident; False when it was already resolved (nothing written)."""
        if not self.mark_resolved(db, incident_id, actor):
            return False
        self.append(db, incident_id, actor, EventKind.STATE_CHANGED, {"from": "open", "to": "resolved",
                                                                      "reason": reason})
        return True

    def reopen(self, db: sqlite_utils.Database, incident_id: int, actor: str, reason: str) -> bool:
        """Open a resolved incident again; False when it is not resolved (nothing written)."""
        if not self.mark_reopened(db, incident_id):
            return False
        self.append(db, incident_id, actor, EventKind.STATE_CHANGED, {"from": "resolved", "to": "open",
                                                                      "reason": reason})
        return True
