"""Remember what was already handled for a while, in bounded memory: HTTP replays and Socket Mode re-deliveries."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

DEFAULT_CAPACITY = 50_000
"""Keys kept at most.  Only Slack can produce a key (requests are verified first), so this bounds memory
against a flood of genuine traffic: at 100 requests/s five minutes is 30,000 keys."""


class ReplayGuard:
    """``first_time(key)`` is True once per key within ``ttl`` seconds, thread-safe, at most ``capacity`` keys."""

    def __init__(self, ttl: float, *, capacity: int = DEFAULT_CAPACITY, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.capacity = capacity
        self._clock = clock
        self._expiry: OrderedDict[Hashable, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, key: Hashable) -> bool:
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
