"""The audit chain: the key it is signed with, how each event's hash is computed, and what verifying found.

Every event stores an HMAC-SHA256 (keyed with the audit key, which is not in
the database) over its content and the previous event's hash, so editing a
row, or rewriting the chain from there on, is detected by ``meshbot incidents
verify`` unless the editor also holds the key.  Events written before the key
existed keep their plain SHA-256 hashes as a legacy prefix; where that prefix
ends, which database the log is (its anchors name it) and which key signs it
(a check value, so a wrong key is told from tampering) are sealed with an HMAC
too, so stretching the prefix over rewritten events needs the key.  The threat
model is in docs/security.md.
"""

from __future__ import annotations

import dataclasses
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
KEY_CHECK_CHARS = 16


@dataclass(frozen=True)
class AuditKey:
    """The HMAC key of the event chain and of approval plans; never logged, never stored in the database."""

    secret: bytes = field(repr=False)
    source: str
    """Where it came from (a setting's name or a file path), for messages."""

    generated: bool = field(default=False, compare=False)
    """True when this process just created it (no key was configured nor found next to the database)."""

    def mac(self, message: bytes) -> str:
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    @property
    def check(self) -> str:
        """A check value naming the key without revealing it (like a KCV): a wrong key is told from tampering."""
        return self.mac(b"meshbot-audit-key-check")[:KEY_CHECK_CHARS]

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
    return dataclasses.replace(_read_key_file(path), generated=True)


def read_key_file(path: str | os.PathLike) -> AuditKey:
    """A key named on the command line (``--key-file``, ``--previous-key-file``)."""
    try:
        return _read_key_file(Path(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the audit key file {path}: {exc}") from None


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
class AuditSeal:
    """The audit chain's bookkeeping row, sealed with the key: nobody without it moves the legacy boundary, swaps
    the log's identity or claims another key signs it."""

    legacy_until: int
    log_id: str | None
    key_check: str | None
    rotated_at: int
    """The id of the newest key rotation event (0: never rotated): events after it are signed with this key."""
    mac: str | None

    def holds(self, key: AuditKey) -> bool:
        return self.mac is not None and hmac.compare_digest(self.mac, seal_mac(key, self))


def seal_mac(key: AuditKey, seal: AuditSeal) -> str:
    return key.mac(json.dumps(["audit-seal", seal.log_id, seal.legacy_until, seal.key_check, seal.rotated_at],
                              separators=(",", ":")).encode())


def new_log_id() -> str:
    """A database's identity for its anchors (a pod's name changes at every restart; a log's never does)."""
    return secrets.token_hex(8)


def wrong_key_message(given: AuditKey, expected_check: str) -> str:
    return (f"wrong audit key: this log is signed with the key whose check value is {expected_check}, the key from "
            f"{given.source} has {given.check} (nothing says the log was edited; give the right key)")


@dataclass(frozen=True)
class ChainReport:
    events: int
    broken_at: int | None = None
    reason: str | None = None
    unkeyed: int = 0
    """Events 1..unkeyed were written before the audit key (plain SHA-256)."""
    anchors: tuple[str, ...] = ()
    """Each anchor the chain was compared with, as 'file: event #131 at 04:12 UTC'."""
    wrong_key: str | None = None
    """Set when the key given is not the log's (its check value differs): not a sign of tampering."""
    findings: tuple[str, ...] = ()
    """Rows outside the chain that disagree with it (an incident's title, an approval's state), and alarms the
    log recorded (an execution refused for want of authority, an anchor that was not an ancestor)."""
    unchecked: tuple[str, ...] = ()
    """Ranges signed with an earlier key that was not given (``--previous-key-file``)."""

    @property
    def intact(self) -> bool:
        return self.broken_at is None and self.wrong_key is None and not self.findings

    def lines(self) -> list[str]:
        """What ``meshbot incidents verify`` prints: every finding, named."""
        if self.wrong_key:
            return [self.wrong_key]
        if self.broken_at is not None:
            out = [f"incident log TAMPERED: event {self.broken_at}: {self.reason} ({self.events} events checked)"]
        elif self.findings:
            out = [f"incident log TAMPERED: the hash chain holds ({self.events} events) but {len(self.findings)} "
                   "row(s) or alarm(s) disagree with it:"]
        else:
            out = [f"incident log intact: {self.events} events, hash chain verified (HMAC-SHA256 with the audit key)"]
        out += [f"  {finding}" for finding in self.findings]
        if self.unkeyed:
            out.append(f"events 1\u2013{self.unkeyed} are unkeyed (written before the audit key): "
                       "they show edits, not a recomputed chain")
        out += [f"not checked: {line}" for line in self.unchecked]
        out += [f"anchor {a}" for a in self.anchors]
        if self.broken_at is None and not self.anchors:
            out.append("no anchor found outside the database: deleting the newest events would not be detected")
        return out
