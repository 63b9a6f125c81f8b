"""Who is in a Slack user group, asked once and shared: roles (who may ask, resolve) and votes (who may approve).

``usergroups.users.list`` answers are kept for ``GROUP_CACHE_SECONDS`` at most, so someone removed from the
on-call group loses their rights within that time.  When the answer has expired and Slack cannot give a new one,
``members`` raises instead of returning the last known members (fail closed): the caller refuses, saying it could
not check (https://api.slack.com/methods/usergroups.users.list).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

GROUP_CACHE_SECONDS = 300.0


class GroupDirectory:
    """``members(group)``: a fresh answer (at most ``max_age`` old) or the lookup's SlackError, never a stale one."""

    def __init__(self, lookup: Callable[[str], Iterable[str]], *, max_age: float = GROUP_CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self._lookup = lookup
        self._max_age = max_age
        self._clock = clock
        self._answers: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def members(self, group: str) -> frozenset[str]:
        now = self._clock()
        with self._lock:
            cached = self._answers.get(group)
            if cached is not None and now - cached[0] < self._max_age:
                return cached[1]
        members = frozenset(self._lookup(group))  # a SlackError propagates: the last answer is not used
        with self._lock:
            self._answers[group] = (now, members)
        return members

    def remember(self, group: str, members: Iterable[str]) -> None:
        """An answer obtained elsewhere (the start-up quorum check) counts as a fresh one."""
        with self._lock:
            self._answers[group] = (self._clock(), frozenset(members))
