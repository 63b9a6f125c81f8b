"""Remember what was already handled for a while: HTTP replays and Socket Mode re-deliveries.

``ReplayGuard`` keeps keys in bounded memory (one process); ``DeliveryLedger`` keeps them in the database every
replica shares, so a replay to another replica or after a restart is seen too (issue 24 item 5).
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Protocol

import sqlite_utils

from bot.storage.database import Database, migration

DEFAULT_CAPACITY = 50_000
"""Keys kept at most.  Only Slack can produce a key (requests are verified first), so this bounds memory
against a flood of genuine traffic: at 100 requests/s five minutes is 30,000 keys."""


log = logging.getLogger(__name__)


class Deliveries(Protocol):
    """What remembers handled deliveries: ``ReplayGuard`` (one process) or ``DeliveryLedger`` (every replica)."""

    def first_time(self, key: Hashable, expires_at: float | None = None) -> bool: ...


class ReplayGuard:
    """``first_time(key)`` is True once per key within ``ttl`` seconds, thread-safe, at most ``capacity`` keys."""

    def __init__(self, ttl: float, *, capacity: int = DEFAULT_CAPACITY, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.capacity = capacity
        self._clock = clock
        self._expiry: OrderedDict[Hashable, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, key: Hashable, expires_at: float | None = None) -> bool:
        """``expires_at`` (wall-clock seconds) is for the shared ledger; memory keeps every key ``ttl`` seconds."""
        now = self._clock()
        with self._lock:
            self._forget_expired(now)
            expires = self._expiry.get(key)
            if expires is not None and expires > now:
                return False
            self._expiry[key] = now + self.ttl
            self._expiry.move_to_end(key)
            while len(self._expiry) > self.capacity:
                self._expiry.popitem(last=False)  # the oldest: it would expire first anyway
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)

    def _forget_expired(self, now: float) -> None:
        # Keys go in in time order with the same ttl, so the expired ones are at the front.
        while self._expiry:
            key, expires = next(iter(self._expiry.items()))
            if expires > now:
                return
            del self._expiry[key]


@migration(11, "Slack deliveries already handled (request signatures, event ids, Socket Mode envelope ids)")
def deliveries_table(db: sqlite_utils.Database) -> None:
    # Shared by every replica and kept across restarts: a replay to another pod, or after a restart, is seen.
    db.executescript("""
        CREATE TABLE slack_deliveries (
            key TEXT PRIMARY KEY,
            expires_at DOUBLE PRECISION NOT NULL  -- epoch seconds: PostgreSQL's REAL (float4) would round them by ~2 minutes
        );
        CREATE INDEX slack_deliveries_by_expiry ON slack_deliveries(expires_at);
    """)


@migration(2, "Slack deliveries already handled, in the request path's own file")
def intake_deliveries(db: sqlite_utils.Database) -> None:
    # The main database's migration 11 table, which moves here beside a SQLite file (bot.server.schema, 15): every
    # Slack request records its key before it is answered, so it must not wait for the main file's writer.
    deliveries_table.apply(db)


SWEEP_EVERY = 200
"""Expired rows are deleted on every this many deliveries (each lookup ignores an expired row anyway)."""


class DeliveryLedger:
    """``first_time(key, expires_at)`` in the database: once per key until it expires, across replicas and restarts.

    The expiry comes from the request (its signed timestamp plus Slack's five-minute window: a replay after that
    is refused as stale by the signature check), not from when this replica first saw it.  A process-local
    ``ReplayGuard`` answers repeats without a database round trip."""

    def __init__(self, database: Database, ttl: float, *, clock: Callable[[], float] = time.time):
        self.database = database
        self.ttl = ttl
        self._clock = clock
        self._local = ReplayGuard(ttl, clock=clock)
        self._count = itertools.count(1)

    def first_time(self, key: Hashable, expires_at: float | None = None) -> bool:
        if not self._local.first_time(key):
            return False
        now = self._clock()
        name = key if isinstance(key, str) else json.dumps(key, default=str)
        try:
            return self._record(name, expires_at, now)
        except Exception as exc:
            if not self.database.transient(exc):
                raise
            # The database is down: this replica's own memory has already refused a repeat here, and the handler
            # behind (a click, a command) answers "not recorded, click again" when it cannot write either; a 500
            # would only make Slack retry into the same outage.
            log.warning("replay ledger unavailable (%s); deciding from this replica's memory", exc)
            return True

    def _record(self, name: str, expires_at: float | None, now: float) -> bool:
        expiry = max(expires_at if expires_at is not None else now + self.ttl, now + 1)
        # One statement decides, on the ack's path (``Database.write_once``): a new key is inserted, a key whose row
        # has expired is taken over, a live key changes nothing (0 rows: seen before).
        first = self.database.write_once(
            "INSERT INTO slack_deliveries (key, expires_at) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
            "SET expires_at = excluded.expires_at WHERE slack_deliveries.expires_at <= ?", [name, expiry, now]) == 1
        if next(self._count) % SWEEP_EVERY == 0:
            self.database.write_once("DELETE FROM slack_deliveries WHERE expires_at <= ?", [now])
        return first
