"""Storing Alertmanager webhook bodies as they arrive, before anything is applied (group commit).

The webhook only stores the raw notification, so Alertmanager never times out
and retries into duplicates; ``bot.incidents.flow`` applies stored ones in
arrival order.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from bot.incidents.store import IncidentStore


@dataclass(eq=False)
class _Waiting:
    row: tuple[str, str, str, str]
    done: threading.Event = field(default_factory=threading.Event)
    leads: bool = False
    id: int | None = None
    error: BaseException | None = None


class NotificationWriter:
    """Stores raw webhook bodies; webhooks arriving together share one transaction (group commit).

    Each transaction must wait for SQLite's single writer, and under a storm ten webhooks queueing for it one
    by one (each re-taking the GIL several times while holding it) is what made the webhook's p99 miss 100 ms.
    The first webhook to arrive commits everyone queued behind it; when more arrived meanwhile, the oldest of
    them commits the next group.  Every body is committed before its webhook is answered."""

    def __init__(self, store: IncidentStore):
        self._incidents = store
        self._lock = threading.Lock()
        self._queue: list[_Waiting] = []
        self._committing = False

    def store(self, received_at: str, group_key: str, status: str, body: str) -> int:
        mine = _Waiting((received_at, group_key, status, body))
        with self._lock:
            self._queue.append(mine)
            mine.leads = not self._committing
            self._committing = True
        if not mine.leads:
            mine.done.wait()
        if mine.leads:  # first in, or handed the next group by the previous committer
            self._commit_group()
        if mine.error is not None:
            raise mine.error
        if mine.id is None:  # the committer sets an id or an error before it sets ``done``
            raise RuntimeError("a stored webhook body got no id")
        return mine.id

    def _commit_group(self) -> None:
        with self._lock:
            group, self._queue = self._queue, []
        try:
            with self._incidents.database.transaction() as db:
                for waiting in group:
                    waiting.id = self._incidents.add_notification(db, *waiting.row)
        except BaseException as exc:  # every webhook of the group answers with the error; none is half-stored
            for waiting in group:
                waiting.error = exc
        with self._lock:
            successor = self._queue[0] if self._queue else None
            if successor is None:
                self._committing = False
            else:
                successor.leads = True
        for waiting in group:
            waiting.leads = False
            waiting.done.set()
        if successor is not None:
            successor.done.set()
