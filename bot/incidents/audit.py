"""The audit chain: the key it is signed with, how each event's hash is computed, and what verifying found.

Every event stores an HMAC-SHA256 (keyed with the audit key, which is not in
the database) over its content and the previous event's hash, so editing a
row, or rewriting the chain from there on, is detected by ``meshbot incidents
verify`` unless the editor also holds the key.  Events written before the key
existed keep their plain SHA-256 hashes as a legacy prefix.  The threat model
is in docs/security.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.storage.database import has_local_file
from commands.errors import UserError

log = logging.getLogger(__name__)

GENESIS = "0" * 64
AUDIT_KEY_MIN_CHARS = 32


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


def _canonical_event(prev_hash: str, incident_id: int | None, at: str, actor: str, kind: str, data: str) -> bytes:
    return json.dumps([prev_hash, incident_id, at, actor, kind, data], separators=(",", ":")).encode()


def event_hash(prev_hash: str, incident_id: int | None, at: str, actor: str, kind: str, data: str) -> str:
    """SHA-256 over the previous hash and this event's canonical content (events from before the audit key)."""
    return hashlib.sha256(_canonical_event(prev_hash, incident_id, at, actor, kind, data)).hexdigest()


def event_mac(key: AuditKey, prev_hash: str, incident_id: int | None, at: str, actor: str, kind: str,
              data: str) -> str:
    """HMAC-SHA256 with the audit key over the same content: recomputing it needs the key."""
    return key.mac(_canonical_event(prev_hash, incident_id, at, actor, kind, data))


def broken_event(key: AuditKey, row: Mapping[str, Any], prev: str, legacy_until: int) -> str | None:
    """Why a stored event does not chain onto ``prev``, or None when it does."""
    if row["prev_hash"] != prev:
        return "prev_hash does not match the previous event (an event was removed or reordered)"
    content = (prev, row["incident_id"], row["at"], row["actor"], row["kind"], row["data"])
    if row["id"] <= legacy_until:
        if row["hash"] != event_hash(*content):
            return "content does not match its hash (the event was edited)"
        return None
    if not hmac.compare_digest(row["hash"], event_mac(key, *content)):
        return ("content does not match its hash (HMAC-SHA256 with the audit key): the event was edited, "
                "or the chain was recomputed without the key")
    return None


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
