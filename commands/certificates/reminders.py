"""Which certificate-expiry reminders are due.  Pure: an inventory, a moment and what was already sent.

A certificate is known by its fingerprint (Envoy's copies by serial), so a
renewed certificate is a new one and its reminders start over.  For each
certificate, the reminder for the smallest threshold it has crossed is due
once (one found at 20 days left gets the 30-day reminder, not 90 and 30);
inside the last threshold, and once expired, one reminder is due per day.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from commands.certificates.inventory import CertRole, InventoryEntry
from commands.certificates.x509 import CertInfo, days_left
from commands.thresholds import DEFAULT_THRESHOLDS
from commands.times import rfc3339

DEFAULT_DAYS = DEFAULT_THRESHOLDS.reminder_days


@dataclass(frozen=True)
class Expiry:
    """One certificate's facts, as a reminder and ``/mesh reminders`` show them."""

    key: str
    """Fingerprint (or ``serial:…``): a renewed certificate gets a new key."""
    what: str
    role: CertRole
    origin: str
    subject: str
    sans: tuple[str, ...]
    serial: str
    not_after: datetime
    days_left: int
    namespaces: tuple[str, ...]
    dependents: tuple[str, ...]
    renewal: str
    renewal_command: str | None
    expired: bool
    """``not_after`` has passed (``days_left`` is 0 during the first day after expiry)."""

    @property
    def is_mesh_root(self) -> bool:
        return self.role == CertRole.MESH_ROOT

    def to_dict(self) -> dict:
        return {"key": self.key, "what": self.what, "role": str(self.role), "origin": self.origin,
                "subject": self.subject, "sans": list(self.sans), "serial": self.serial,
                "not_after": rfc3339(self.not_after), "days_left": self.days_left, "namespaces": list(self.namespaces),
                "dependents": list(self.dependents), "renewal": self.renewal,
                "renewal_command": self.renewal_command, "expired": self.expired}


@dataclass(frozen=True)
class Reminder:
    expiry: Expiry
    slot: str
    """What makes it unique for this certificate: ``90d``, ``30d``, ``7d`` or ``day:2026-11-23``."""
    threshold: int | None
    """The threshold crossed (None for a daily reminder)."""


def expiry_of(entry: InventoryEntry, now: datetime) -> Expiry:
    cert = entry.cert
    key = cert.fingerprint if isinstance(cert, CertInfo) else f"serial:{cert.serial}:{rfc3339(cert.not_after)}"
    return Expiry(
        key=key, what=entry.what, role=entry.role, origin=entry.origin,
        subject=cert.subject if isinstance(cert, CertInfo) else "", sans=tuple(cert.sans), serial=cert.serial,
        not_after=cert.not_after, days_left=days_left(cert.not_after, now), namespaces=tuple(sorted(entry.namespaces)),
        dependents=tuple(sorted(entry.dependents)), renewal=entry.remediation.summary,
        renewal_command=entry.remediation.command, expired=cert.not_after <= now)


def upcoming(entries: Sequence[InventoryEntry], now: datetime) -> list[Expiry]:
    """Every certificate, soonest expiry first."""
    return sorted((expiry_of(e, now) for e in entries), key=lambda x: (x.not_after, x.key))


def due(expiries: Sequence[Expiry], today: date, sent: Collection[tuple[str, str]],
        days: Sequence[int] = DEFAULT_DAYS) -> list[Reminder]:
    """The reminders to post now: at most one per certificate, none already in ``sent`` (key, slot)."""
    thresholds = sorted(set(days))
    if not thresholds:
        return []
    last = thresholds[0]
    reminders = []
    for expiry in expiries:
        crossed = [t for t in thresholds if expiry.days_left <= t]
        if not crossed:
            continue
        threshold = crossed[0]
        candidates = [Reminder(expiry, f"{threshold}d", threshold)]
        if expiry.days_left <= last:
            candidates.append(Reminder(expiry, f"day:{today.isoformat()}", None))
        for candidate in candidates:
            if (expiry.key, candidate.slot) not in sent:
                reminders.append(candidate)
                break
    return sorted(reminders, key=lambda r: (r.expiry.not_after, r.expiry.key))


def slots_covered(reminder: Reminder, today: date) -> list[str]:
    """Slots a posted reminder uses up: a threshold reminder also counts as today's daily one."""
    daily = f"day:{today.isoformat()}"
    return [reminder.slot] if reminder.slot == daily else [reminder.slot, daily]


# -- the ledger a replica hands to the next one ----------------------------------------------

LEDGER_FORMAT = 1


class LedgerError(ValueError):
    """A shared ledger that is not in ``encode_ledger``'s format."""


def encode_ledger(sent: Collection[tuple[str, str]], current_keys: Collection[str], today: date) -> str:
    """``sent`` (key, slot) as compact JSON, pruned to what can still matter.

    Kept: slots of certificates in the current inventory (a renewed or removed one
    never comes back under the same key), and of the daily slots only today's and
    yesterday's (a replica in another time zone may still be on yesterday).
    """
    keep = set(current_keys)
    oldest_day = (today - timedelta(days=1)).isoformat()
    by_key: dict[str, list[str]] = {}
    for key, slot in sorted(sent):
        if key in keep and not (slot.startswith("day:") and slot[4:] < oldest_day):
            by_key.setdefault(key, []).append(slot)
    return json.dumps({"format": LEDGER_FORMAT, "sent": by_key}, separators=(",", ":"), sort_keys=True)


def decode_ledger(text: str | None) -> set[tuple[str, str]]:
    """The (key, slot) pairs of ``encode_ledger``'s output; empty for None; LedgerError when malformed."""
    if not text:
        return set()
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise LedgerError(f"not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != LEDGER_FORMAT or not isinstance(data.get("sent"), dict):
        raise LedgerError(f'expected {{"format": {LEDGER_FORMAT}, "sent": {{key: [slot, ...]}}}}')
    pairs: set[tuple[str, str]] = set()
    for key, slots in data["sent"].items():
        if not isinstance(slots, list) or not all(isinstance(slot, str) for slot in slots):
            raise LedgerError(f"slots of {key!r} are not a list of strings")
        pairs.update((key, slot) for slot in slots)
    return pairs
