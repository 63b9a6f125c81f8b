"""The incident log: the incident store whose events form an append-only, keyed hash chain.

Over 450 lines because appending, verifying and anchoring share the chain's head and its one lock.

Appending an event signs it with the audit key over its content and the
previous event's hash (``bot.incidents.audit``); the first append seals the
log (its identity, where the unkeyed prefix ends, the key's check value) and
a log sealed with one key refuses events signed with another.  ``verify``
recomputes the chain, compares its head with the anchors kept outside the
database (``bot.incidents.anchors``) and the incident rows with the events;
the head is anchored as events are written, never over an anchor that is not
its ancestor.  The SQL is the store's (``bot.incidents.store``).  The threat
model is in docs/security.md.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlite_utils

from bot.incidents.anchors import (
    ANCHOR_EVERY,
    ANCHOR_PREFIX_CHARS,
    Anchor,
    AnchorStore,
    against_anchor,
    ancestor_problem,
    anchor_time,
    default_anchor_stores,
)
from bot.incidents.audit import (
    GENESIS,
    AuditKey,
    AuditSeal,
    ChainReport,
    broken_event,
    event_mac,
    load_audit_key,
    new_log_id,
    seal_mac,
    wrong_key_message,
)
from bot.incidents.records import DiagnosisRecord, EventKind, iso
from bot.incidents.store import IncidentStore
from bot.storage.database import Database, has_local_file
from bot.storage.dialect import Lock, lock_key
from commands.errors import MeshbotError, UserError

log = logging.getLogger(__name__)

_EPHEMERAL_KEYS: weakref.WeakKeyDictionary[Database, AuditKey] = weakref.WeakKeyDictionary()


class AuditKeyError(MeshbotError):
    """The log cannot be written with this key: it is sealed with another, or its seal was edited."""


@dataclass
class IncidentLog(IncidentStore):
    """The store plus the chain: every event written through ``append`` is signed and chained, and whoever holds
    an incident log (the flow, the approval desk, reminders) reads incidents through the store's methods."""

    key: AuditKey | None = None
    """None: the key generated next to the database (``load_audit_key``)."""
    anchor_stores: tuple[AnchorStore, ...] | None = None
    """None: the anchor file next to the database."""
    anchor_every: timedelta = ANCHOR_EVERY
    previous_keys: tuple[AuditKey, ...] = ()
    """Keys of the log before rotations (``verify --previous-key-file``), to check the events they signed."""
    on_alarm: Callable[[sqlite_utils.Database, str], None] | None = None
    """Called with each alarm inside the transaction that records it: a metric and a Slack note (the outbox)."""
    _last_anchor: Anchor | None = field(default=None, init=False, repr=False)
    _alarmed: set[str] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.key is None and not has_local_file(self.database.path):
            # In memory, or PostgreSQL with no key configured (``serve`` refuses that; tests and tools do it):
            # one ephemeral key per open database, so two logs on it do not sign one chain with two keys.
            self.key = _EPHEMERAL_KEYS.setdefault(self.database, AuditKey.generate())
        if self.key is None:
            self.key = load_audit_key(None, self.database.path)
        if self.anchor_stores is None:
            self.anchor_stores = default_anchor_stores(self.database.path)

    def audit_key(self) -> AuditKey:
        """The key this log MACs and checks events with (loaded at construction)."""
        if self.key is None:  # __post_init__ loads one: only setting it to None afterwards gets here
            raise RuntimeError("the incident log has no audit key")
        return self.key

    # -- the seal ---------------------------------------------------------------------------

    def _sealed(self, db: sqlite_utils.Database) -> AuditSeal:
        """The log's seal, written now if this is its first keyed write; refuses a log sealed with another key."""
        key, seal = self.audit_key(), self.seal(db)
        if seal is None:
            raise AuditKeyError("the audit_chain row is gone (deleted in the database): nothing says where the "
                                "unkeyed prefix ends; refusing to write the incident log")
        if seal.mac is None:
            problem = self._signed_by_another_key(db, seal)
            if problem:
                raise AuditKeyError(problem)
            fresh = AuditSeal(seal.legacy_until, new_log_id(), key.check, 0, None)
            self.write_seal(db, dataclasses.replace(fresh, mac=seal_mac(key, fresh)), first=True)
            seal = self.seal(db) or fresh
        if seal.key_check != key.check:
            raise AuditKeyError(self._wrong_key(seal.key_check or ""))
        if not seal.holds(key):
            raise AuditKeyError("the audit seal (legacy boundary, log identity, key check) does not hold with the "
                                "audit key: it was edited in the database; refusing to write the incident log")
        return seal

    def _signed_by_another_key(self, db: sqlite_utils.Database, seal: AuditSeal) -> str | None:
        """An unsealed log whose newest event is keyed (written before seals existed) must be keyed with ours."""
        newest = self.newest_event(db)
        if newest is None or newest[0] <= seal.legacy_until:
            return None
        row = self.event_row(db, newest[0])
        if row is None or broken_event(self.audit_key(), row, row["prev_hash"], seal.legacy_until) is None:
            return None
        return self._wrong_key("(unknown: the log predates check values)")

    def _wrong_key(self, expected: str) -> str:
        key = self.audit_key()
        if key.generated:
            return (f"the incident log holds events signed with an audit key but none is configured (a new one was "
                    f"just generated at {key.source}): set MESHBOT_AUDIT_KEY(_FILE) or restore the key file; a new "
                    "key would fork the log")
        return wrong_key_message(key, expected)

    def startup_problem(self) -> str | None:
        """Why ``serve`` must not start with this key (None when it may): checked before anything is written."""
        with self.database.transaction() as db:
            try:
                self._sealed(db)
            except AuditKeyError as exc:
                return str(exc)
        return None

    def rotate_key(self, new: AuditKey, actor: str) -> int:
        """Sign the log with ``new`` from now on: a rotation event (HMAC with the new key, and a proof made with
        the old one) that the seal names.  Returns the event's id; set MESHBOT_AUDIT_KEY to the new key next."""
        old = self.audit_key()
        if new.check == old.check:
            raise UserError("the new audit key is the current one")
        with self.database.transaction() as db:
            lock_key(db, Lock.AUDIT_CHAIN, "events")  # a chain event of its own, and the seal that names it
            seal = self._sealed(db)
            prev, at = self.last_hash(db) or GENESIS, iso(self.clock())
            payload = json.dumps({"from": old.check, "to": new.check, "previous_rotation": seal.rotated_at,
                                  "proof": rotation_proof(old, prev, new.check)}, sort_keys=True)
            kind = str(EventKind.AUDIT_KEY_ROTATED)
            event_id = self.insert_event(db, None, at, actor, kind, payload, prev,
                                         event_mac(new, prev, None, at, actor, kind, payload))
            rotated = AuditSeal(seal.legacy_until, seal.log_id, new.check, event_id, None)
            self.write_seal(db, dataclasses.replace(rotated, mac=seal_mac(new, rotated)), first=False)
        self.previous_keys = (*self.previous_keys, old)
        self.key = new
        self._last_anchor = None
        self.anchor_now()
        return event_id

    # -- events -------------------------------------------------------------------

    def append(self, db: sqlite_utils.Database, incident_id: int | None, actor: str, kind: EventKind | str,
               data: Mapping[str, Any] | None = None) -> int:
        """Append an event inside the caller's ``database.transaction()``.

        The chain is one chain: each event links to the hash of the one before it, so appends take turns.  That is
        the one lock every replica shares (``Lock.AUDIT_CHAIN``; SQLite's single writer needs none), and it is
        taken here, just before the event's row, not at the transaction's start: the caller's reads and decisions
        run before it, under their own key's lock.  It is held from here to the commit (PostgreSQL releases
        transaction locks only then, and the next appender must see this event as the last), which is the
        transaction's remaining statements, milliseconds; a holder paused meanwhile is ended by the server after
        ``idle_in_transaction_session_timeout``.  Ids are drawn under it too, so id order is chain order."""
        fields = dict(data or {})
        if str(kind) == EventKind.INCIDENT_OPENED and incident_id is not None:
            # The incident row's title and severity are plain columns: the opening event carries them, so
            # ``verify`` tells an edited row from the one meshbot wrote.
            incident = self.get_in(db, incident_id)
            fields["incident"] = {"title": incident.title, "severity": incident.severity}
        payload = json.dumps(fields, sort_keys=True, default=str)
        lock_key(db, Lock.AUDIT_CHAIN, "events")
        self._sealed(db)
        prev = self.last_hash(db) or GENESIS
        at = iso(self.clock())
        digest = event_mac(self.audit_key(), prev, incident_id, at, actor, str(kind), payload)
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

    def authentic(self, db: sqlite_utils.Database, incident_id: int, kinds: Sequence[str]) -> list[dict[str, Any]]:
        """An incident's events of these kinds that carry this key's HMAC where they stand in the chain (the event
        before them has the hash they link to), with ``data`` parsed: what authority may be derived from."""
        legacy_until = (self.seal(db) or AuditSeal(0, None, None, 0, None)).legacy_until
        out = []
        for row in self.event_rows(db, incident_id, kinds):
            if row["id"] <= legacy_until or row["prev_hash"] != (row.pop("before") or GENESIS):
                continue
            # The current key, or one it replaced (a request opened before a rotation keeps its authority).
            if any(broken_event(key, row, row["prev_hash"], legacy_until) is None
                   for key in (self.audit_key(), *self.previous_keys)):
                out.append({**row, "data": json.loads(row["data"])})
        return out

    def alarm(self, message: str, db: sqlite_utils.Database | None = None, incident_id: int | None = None) -> None:
        """Evidence of tampering found while running: logged, kept as an AUDIT_ALARM event (``verify`` reports every
        one) and handed to ``on_alarm`` in the same transaction (a metric, a Slack note through the outbox); the
        same message is raised once per process."""
        if message in self._alarmed:
            return
        self._alarmed.add(message)
        log.error("AUDIT ALARM: %s", message)
        if db is not None:
            self._record_alarm(db, message, incident_id)
            return
        try:
            with self.database.transaction() as own:
                self._record_alarm(own, message, incident_id)
        except (MeshbotError, OSError) as exc:
            log.error("could not record the audit alarm in the log: %s", exc)

    def _record_alarm(self, db: sqlite_utils.Database, message: str, incident_id: int | None) -> None:
        self.append(db, incident_id, "meshbot", EventKind.AUDIT_ALARM, {"alarm": message})
        if self.on_alarm is not None:
            self.on_alarm(db, message)

    # -- verifying ------------------------------------------------------------------------------

    def verify(self, anchors: Sequence[AnchorStore] | None = None) -> ChainReport:
        """Recompute the chain, compare its head with every anchor kept outside the database, and the incident
        rows with the events; every finding is named."""
        keys = {k.check: k for k in (*self.previous_keys, self.audit_key())}
        seal = self.seal()
        events = self.newest_event_id()
        if seal is None:
            return ChainReport(events, 0, "the audit seal row (audit_chain) was deleted")
        if seal.mac is None:
            if not events:
                return ChainReport(0)
            return ChainReport(events, 0, f"the log is not sealed with the audit key, so its unkeyed prefix (events "
                               f"1\u2013{seal.legacy_until}) may have been stretched over rewritten events (start "
                               "meshbot once with the key to seal a log that really predates it)",
                               unkeyed=seal.legacy_until)
        sealing = keys.get(seal.key_check or "")
        if sealing is None:
            return ChainReport(events, wrong_key=wrong_key_message(self.audit_key(), seal.key_check or ""))
        if not seal.holds(sealing):
            return ChainReport(events, 0, "the audit seal does not hold: the legacy boundary, the log's identity, "
                               "its key check value or its newest rotation was edited in the database",
                               unkeyed=seal.legacy_until)
        return self._walk(seal, keys, anchors)

    def _walk(self, seal: AuditSeal, keys: Mapping[str, AuditKey], anchors: Sequence[AnchorStore] | None
              ) -> ChainReport:
        legacy_until = seal.legacy_until
        segments = _key_segments(self.kind_rows([str(EventKind.AUDIT_KEY_ROTATED)]), seal)
        if isinstance(segments, tuple):
            return ChainReport(self.newest_event_id(), segments[0], segments[1], unkeyed=legacy_until)
        stores = (self.anchor_stores or ()) if anchors is None else anchors
        named = [(store.name, anchor) for store in stores if (anchor := store.latest(seal.log_id or "")) is not None]
        wanted = {anchor.event_id for _, anchor in named}
        prev, count, last_id = GENESIS, 0, 0
        seen: dict[int, str] = {}
        unchecked: dict[str, list[int]] = {}
        for row in self.chain_rows():
            count += 1
            check = segments.check_for(row["id"]) if row["id"] > legacy_until else None
            key = keys.get(check) if check else self.audit_key()
            if key is None and check:
                unchecked.setdefault(check, []).append(row["id"])
            broken = broken_event(key, row, prev, legacy_until) if key else _link_broken(row, prev)
            broken = broken or (segments.proof_broken(row, prev, keys) if key else None)
            if broken:
                return ChainReport(count, row["id"], broken, unkeyed=legacy_until)
            if row["id"] in wanted:
                seen[row["id"]] = row["hash"]
            prev, last_id = row["hash"], row["id"]
        described, findings = [], []
        for store, anchor in sorted(named, key=lambda item: -item[1].event_id):
            if anchor.mac is None:
                described.append(f"{store}: ignored, it carries no HMAC (written before anchors were signed)")
                continue
            if not any(anchor.holds(k) for k in keys.values()):
                findings.append(f"the {store} anchor naming event #{anchor.event_id} is forged: its HMAC does not "
                                "match the audit key")
                continue
            where = f"the anchor of {anchor_time(anchor.at)} ({store})"
            broken_at, reason = against_anchor(anchor, where, last_id, seen, legacy_until)
            if reason:
                return ChainReport(count, broken_at, reason, unkeyed=legacy_until)
            described.append(f"{store}: event #{anchor.event_id} of {anchor_time(anchor.at)} matches")
        findings += self.row_findings()
        return ChainReport(count, unkeyed=legacy_until, anchors=tuple(described), findings=tuple(findings),
                           unchecked=tuple(f"events {ids[0]}\u2013{ids[-1]} are signed with an earlier key (check "
                                           f"value {check}): give it with --previous-key-file"
                                           for check, ids in unchecked.items()))

    def row_findings(self) -> list[str]:
        """Incident rows that disagree with the events that wrote them, and the alarms the log recorded."""
        findings = [f"alarm (event #{row['id']}, {row['at']}): {json.loads(row['data']).get('alarm')}"
                    for row in self.kind_rows([str(EventKind.AUDIT_ALARM)])]
        written: dict[int, dict[str, Any]] = {}
        for row in self.kind_rows([str(EventKind.INCIDENT_OPENED), str(EventKind.STATE_CHANGED)]):
            data, seen = json.loads(row["data"]), written.setdefault(row["incident_id"], {})
            if row["kind"] == EventKind.INCIDENT_OPENED:
                seen.update(data.get("incident") or {}, opened=True, status="open", resolved_by=None)
            elif data.get("to") in ("open", "resolved"):
                seen.update(status=data["to"], resolved_by=row["actor"] if data["to"] == "resolved" else None)
        for incident in self.incident_rows():
            logged = written.get(incident["id"])
            if not logged or not logged.get("opened"):
                findings.append(f"incident #{incident['id']} has no incident_opened event: the row was inserted "
                                "outside meshbot")
                continue
            for column in ("title", "severity", "status", "resolved_by"):
                if column in logged and logged[column] != incident[column]:
                    findings.append(f"incident #{incident['id']}: {column} is {incident[column]!r} in the table but "
                                    f"{logged[column]!r} in the log (edited in the database)")
        return findings

    # -- anchoring the head outside the database -----------------------------------------

    def head(self, db: sqlite_utils.Database | None = None) -> Anchor | None:
        """The newest event as a signed anchor (None while the log is empty or unsealed)."""
        newest, seal = self.newest_event(db), self.seal(db)
        if newest is None or seal is None or not seal.log_id:
            return None
        event_id, digest = newest
        return Anchor(event_id, digest[:ANCHOR_PREFIX_CHARS], self.clock(), seal.legacy_until,
                      seal.log_id).signed(self.audit_key())

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
        """Publish the head on every store whose anchor is an ancestor of it; raise an alarm for any other (the
        evidence stays there until a person looks)."""
        head = head or self.head()
        if head is None:
            return None
        for store in self.anchor_stores or ():
            try:
                previous = store.latest(head.log_id)
            except UserError as exc:
                log.warning("not anchoring the audit head on %s: %s", store.name, exc)
                continue
            if previous is not None and (problem := self._not_ancestor(previous, head)):
                self.alarm(f"the {store.name} anchor (event #{previous.event_id}) is not an ancestor of the log's "
                           f"head (event #{head.event_id}): {problem}; it was left in place")
                continue
            store.publish(head)
        self._last_anchor = head
        return head

    def _not_ancestor(self, previous: Anchor, head: Anchor) -> str | None:
        row = self.event_row(self.database.db, previous.event_id)
        hash_of = {previous.event_id: row["hash"]} if row else {}
        if previous.mac is None:  # written before anchors were signed: compare the chain, not the MAC
            previous = previous.signed(self.audit_key())
        keyed = next((k for k in (*self.previous_keys, self.audit_key()) if previous.holds(k)), self.audit_key())
        return ancestor_problem(previous, keyed, head.event_id, hash_of, head.legacy_until)

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


def rotation_proof(old: AuditKey, prev_hash: str, new_check: str) -> str:
    """Made with the old key: whoever rotated held it (a rotation event alone needs only the new one)."""
    return old.mac(json.dumps(["audit-key-rotation", prev_hash, new_check], separators=(",", ":")).encode())


def _link_broken(row: Mapping[str, Any], prev: str) -> str | None:
    if row["prev_hash"] != prev:
        return "prev_hash does not match the previous event (an event was removed or reordered)"
    return None


@dataclass(frozen=True)
class _Segments:
    """Which key signs which events: the one named by each rotation before it, the seal's after the last."""

    rotations: tuple[tuple[int, str, str], ...]
    """(event id, from check, to check), oldest first."""
    current: str

    def check_for(self, event_id: int) -> str:
        for rotation_id, old, new in self.rotations:
            if event_id < rotation_id:
                return old
            if event_id == rotation_id:
                return new
        return self.current

    def proof_broken(self, row: Mapping[str, Any], prev: str, keys: Mapping[str, AuditKey]) -> str | None:
        if row["kind"] != EventKind.AUDIT_KEY_ROTATED:
            return None
        data = json.loads(row["data"])
        old = keys.get(data.get("from", ""))
        if old is None or hmac.compare_digest(str(data.get("proof", "")), rotation_proof(old, prev, data.get("to"))):
            return None
        return "the key rotation's proof does not match the previous key (a rotation forged without it)"


def _key_segments(rows: Iterable[Mapping[str, Any]], seal: AuditSeal) -> _Segments | tuple[int, str]:
    """The key segments rotation events claim, or (event id, why) when they disagree with the seal."""
    rotations = []
    for row in rows:
        if row["id"] <= seal.legacy_until:
            return row["id"], "a key rotation inside the unkeyed prefix"
        data = json.loads(row["data"])
        rotations.append((row["id"], str(data.get("from")), str(data.get("to"))))
    last = rotations[-1][0] if rotations else 0
    if last != seal.rotated_at:
        where = max(last, seal.rotated_at)
        return where, (f"the seal names key rotation #{seal.rotated_at} but the log's newest is #{last} (a rotation "
                       "event was forged or deleted)")
    if rotations and rotations[-1][2] != seal.key_check:
        return last, "the newest key rotation names another key than the seal"
    return _Segments(tuple(rotations), seal.key_check or "")
