"""Anchors: the audit chain's head (event id + hash prefix) kept outside the database.

Deleting events at the very end leaves a valid chain, so the head is also
anchored elsewhere — a file next to the database, the scheduler's Lease, and
the incident's Slack thread — and ``meshbot incidents verify`` compares the
chain with them.  An anchor names the log (its database identity, which a
restart does not change) and carries an HMAC with the audit key, so an anchor
rewritten to match a shortened chain is told from a real one.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol

from bot.incidents.audit import AuditKey
from bot.incidents.records import iso, stored_time
from bot.storage.database import has_local_file
from commands.clients.lease import LeaderElector
from commands.errors import MeshbotError, UserError

log = logging.getLogger(__name__)

ANCHOR_PREFIX_CHARS = 16
"""64 bits of the head's HMAC: enough that nobody without the key can forge a matching event."""
ANCHOR_ANNOTATION = "meshbot.io/audit-head"
"""One annotation per log: ``meshbot.io/audit-head.<log id>`` (a name segment may hold dots, RFC 1123)."""
ANCHOR_EVERY = timedelta(minutes=5)
"""The head is anchored at least this often while events are written (and at every state change)."""


@dataclass(frozen=True)
class Anchor:
    """The chain's head at one moment: whoever later holds a shorter or rewritten chain is caught by it."""

    event_id: int
    hash_prefix: str
    at: datetime
    legacy_until: int = 0
    log_id: str = ""
    """Which log (database) the anchor is of: ``audit_chain.log_id``, sealed with the key."""
    mac: str | None = None
    """HMAC with the audit key over the fields above; an anchor without one proves nothing."""

    def _content(self) -> bytes:
        return json.dumps(["audit-anchor", self.log_id, self.event_id, self.hash_prefix, iso(self.at),
                           self.legacy_until], separators=(",", ":")).encode()

    def signed(self, key: AuditKey) -> Anchor:
        return dataclasses.replace(self, mac=key.mac(self._content()))

    def holds(self, key: AuditKey) -> bool:
        return self.mac is not None and hmac.compare_digest(self.mac, key.mac(self._content()))

    def to_json(self) -> str:
        return json.dumps({"event": self.event_id, "hash": self.hash_prefix, "at": iso(self.at),
                           "legacy_until": self.legacy_until, "log": self.log_id, "mac": self.mac}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Anchor:
        data = json.loads(text)
        return cls(int(data["event"]), str(data["hash"]), stored_time(data["at"]), int(data.get("legacy_until", 0)),
                   str(data.get("log") or ""), data.get("mac"))

    @property
    def line(self) -> str:
        """What the incident thread shows."""
        return f"Audit log head: event #{self.event_id} \u00b7 {self.hash_prefix} ({iso(self.at)})"


class AnchorStore(Protocol):
    """Somewhere outside the database that keeps the latest anchor."""

    name: str

    def publish(self, anchor: Anchor) -> None: ...

    def latest(self, log_id: str) -> Anchor | None:
        """The newest anchor of this log (an anchor of another log is not this one's)."""
        ...


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

    def latest(self, log_id: str) -> Anchor | None:
        try:
            anchor = Anchor.from_json(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"audit anchor {self.path} is unreadable ({exc}); it may have been tampered with") \
                from None
        # A file from before anchors named their log (no "log") is still compared: its MAC decides.
        return anchor if anchor.log_id in ("", log_id) else None


@dataclass
class LeaseAnchorStore:
    """The latest anchor as an annotation of the scheduler's Lease, which meshbot already owns.

    Written through the leader elector (its lock and its read-then-conditional-patch), so it never races the
    elector's own renewals and notes; only the leader writes.  The annotation is named after the log's identity
    (``audit_chain.log_id``), not the pod: a pod's name changes at every restart, and replicas that keep a SQLite
    database each have a log of their own while replicas sharing PostgreSQL share one."""

    elector: LeaderElector
    name: str = "lease"

    def publish(self, anchor: Anchor) -> None:
        self.elector.annotate(annotation_name(anchor.log_id), anchor.to_json())  # False (logged) when not leading

    def latest(self, log_id: str) -> Anchor | None:
        elector = self.elector
        try:
            lease = elector.client.get("Lease", elector.namespace, elector.name)
        except MeshbotError as exc:
            raise UserError(f"cannot read the audit anchor on Lease {elector.namespace}/{elector.name}: {exc}") \
                from None
        text = ((lease.get("metadata") or {}).get("annotations") or {}).get(annotation_name(log_id))
        try:
            return Anchor.from_json(text) if text else None
        except (ValueError, KeyError, TypeError):
            raise UserError(f"annotation {annotation_name(log_id)} on Lease {elector.namespace}/{elector.name} is "
                            "not an anchor; it may have been tampered with") from None


def annotation_name(log_id: str) -> str:
    return f"{ANCHOR_ANNOTATION}.{log_id}"


def default_anchor_stores(db_path: str | os.PathLike) -> tuple[AnchorStore, ...]:
    """The anchor file next to ``db_path``: MESHBOT_DB, which on PostgreSQL still names the pod's data directory
    (each replica keeps the shared log's head there too, and ``verify`` in that pod reads it)."""
    if not has_local_file(db_path):  # in memory
        return ()
    path = Path(db_path)
    return (FileAnchorStore(path.with_name(path.name + ".anchor")),)


def ancestor_problem(anchor: Anchor, key: AuditKey, last_id: int, hash_of: Mapping[int, str],
                     legacy_until: int) -> str | None:
    """Why the head may not replace ``anchor`` (None when the anchored head is an ancestor of ours): publishing
    over it would erase the evidence of a truncation or a rewrite."""
    if not anchor.holds(key):
        return "its HMAC does not match the audit key (forged, or written with another key)"
    if anchor.event_id > last_id:
        return f"it names event #{anchor.event_id} but the chain now ends at #{last_id} (events were deleted)"
    if not hash_of.get(anchor.event_id, "").startswith(anchor.hash_prefix):
        return f"event #{anchor.event_id} no longer has the anchored hash (the chain was rewritten)"
    if anchor.legacy_until != legacy_until:
        return f"it says events 1\u2013{anchor.legacy_until} are unkeyed, the log now says 1\u2013{legacy_until}"
    return None


def against_anchor(anchor: Anchor, where: str, last_id: int, seen: Mapping[int, str],
                   legacy_until: int) -> tuple[int | None, str | None]:
    """Where and why a verified chain (ending at ``last_id``) disagrees with an anchor; (None, None) if not.
    The anchor's HMAC is checked by the caller (which knows the keys)."""
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


def anchor_time(moment: datetime) -> str:
    """How ``verify`` names an anchor's moment."""
    return moment.astimezone(timezone.utc).strftime("%H:%M UTC on %Y-%m-%d")
