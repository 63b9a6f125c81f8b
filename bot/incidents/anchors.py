"""Anchors: the audit chain's head (event id + hash prefix) kept outside the database.

Deleting events at the very end leaves a valid chain, so the head is also
anchored elsewhere — a file next to the database, the scheduler's Lease, and
the incident's Slack thread — and ``meshbot incidents verify`` compares the
chain with them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol

from bot.incidents.records import iso, stored_time
from bot.storage.database import has_local_file
from commands.clients.lease import LeaderElector
from commands.errors import MeshbotError, UserError

log = logging.getLogger(__name__)

ANCHOR_PREFIX_CHARS = 16
"""64 bits of the head's HMAC: enough that nobody without the key can forge a matching event."""
ANCHOR_ANNOTATION = "meshbot.io/audit-head"
ANCHOR_EVERY = timedelta(minutes=5)
"""The head is anchored at least this often while events are written (and at every state change)."""


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
        return cls(int(data["event"]), str(data["hash"]), stored_time(data["at"]), int(data.get("legacy_until", 0)),
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


def against_anchor(anchor: Anchor, where: str, last_id: int, seen: Mapping[int, str],
                   legacy_until: int) -> tuple[int | None, str | None]:
    """Where and why a verified chain (ending at ``last_id``) disagrees with an anchor; (None, None) if not."""
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
