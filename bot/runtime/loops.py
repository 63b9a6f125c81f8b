"""A daemon thread that does one pass of work whenever it is woken, or after a wait the pass chooses.

The incident processor, the outbox and the approval sweeper all run this way.  An Event (not a
Condition) carries the wake-up, and it is cleared *before* each pass, so a wake-up that arrives
during a pass triggers another one instead of being lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

Pass = Callable[[], float | None]
"""One pass; returns the seconds until the next one is due (None: nothing due, wait for a wake-up)."""


class WakeableLoop:
    def __init__(self, name: str, one_pass: Pass, *, idle: float = 30.0, after_error: float = 5.0,
                 min_gap: float = 0.0, before_pass: Callable[[], object] | None = None):
        """``min_gap``: a pass woken sooner than this after the last one began waits for the rest, so a burst of
        wake-ups (one per stored notification in an alert storm) costs one pass, not one each.  ``before_pass``
        is called before each pass (``bot.runtime.priority.Answering.wait_for_quiet``: answers first)."""
        self.name = name
        self._min_gap = min_gap
        self._pass = one_pass
        self._before_pass = before_pass
        self._idle = idle
        self._after_error = after_error
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self.wake()
        if self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping:
            began = time.monotonic()
            self._wake.clear()
            try:
                if self._before_pass is not None:
                    self._before_pass()
                due = self._pass()
            except Exception:
                log.exception("%s: pass failed; retrying in %.0fs", self.name, self._after_error)
                due = self._after_error
            if not self._stopping:
                self._wake.wait(timeout=min(due, self._idle) if due is not None else self._idle)
            rest = self._min_gap - (time.monotonic() - began)
            if rest > 0 and not self._stopping:
                time.sleep(rest)
