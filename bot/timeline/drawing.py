"""The error-ratio graph, drawn in a process of its own so drawing never holds the serving process's GIL.

matplotlib draws in C without releasing the GIL: a diagnosis drawing its timeline graph (100-300 ms a picture
under load) held every other thread of ``meshbot serve`` for that long, and py-spy found it the largest single
use of CPU during ``bench/bench_alert_storm.py``'s alert storm, where webhooks waited behind it (p99 314-470 ms
with the webhook's database already apart, ``bot.storage.intake``).  Drawn in a child process, the webhook and
the Slack ack keep the serving process's GIL, and the picture is drawn on the other core meanwhile.

One drawing process per meshbot process, started by the first graph (spawned, not forked: forking a process
with threads can copy a lock another thread holds) and ended after ``IDLE_SECONDS`` without a graph: it holds
about 105 MB (Python, meshbot's modules and matplotlib) while an incident is drawn, and nothing between incidents.
A spawned child imports the parent's main module as ``__mp_main__``: ``meshbot serve`` and ``python -m bot.cli``
are importable; a parent read from standard input is not, and its graphs are left out.  A graph that cannot be
drawn (the child died or took longer than ``DRAW_TIMEOUT_SECONDS``) is a ``UserError``: the timeline's words
still go out, without the picture (``bot.timeline.thread``).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime

from commands.errors import UserError
from commands.telemetry.changes import Change
from commands.telemetry.edges import FailingEdge
from commands.telemetry.graph import error_ratio_png

DRAW_TIMEOUT_SECONDS = 30.0
"""The first graph also waits for the child to start and import matplotlib (1-2 s; more on a loaded node)."""
IDLE_SECONDS = 120.0
"""An incident's graphs come minutes apart at most (its diagnosis, then people's `/mesh timeline`)."""
log = logging.getLogger(__name__)


class GraphProcess:
    """``error_ratio_png`` in a child process, started on first use and started again after it died."""

    def __init__(self, timeout: float = DRAW_TIMEOUT_SECONDS, idle_seconds: float = IDLE_SECONDS):
        self.timeout = timeout
        self.idle_seconds = idle_seconds
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._drawing = 0
        self._last_drawn = 0.0
        self._reaper: threading.Timer | None = None

    def error_ratio_png(self, edges: Sequence[FailingEdge], changes: Sequence[Change],
                        onset: datetime | None) -> bytes:
        pool = self._running()
        try:
            return pool.submit(error_ratio_png, list(edges), list(changes), onset).result(self.timeout)
        except FutureTimeout:
            self._discard(pool)  # a child stuck drawing would hold every later graph: the next one gets a new one
            raise UserError(f"the graph took longer than {self.timeout:.0f}s to draw") from None
        except BrokenProcessPool:
            self._discard(pool)
            raise UserError("the process drawing graphs ended; the next graph starts a new one") from None
        finally:
            self._done_drawing()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    @property
    def running(self) -> bool:
        """A child process is up (between a graph and ``idle_seconds`` after the last one)."""
        with self._lock:
            return self._pool is not None

    def _running(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            self._drawing += 1
            return self._pool

    def _done_drawing(self) -> None:
        with self._lock:
            self._drawing -= 1
            self._last_drawn = time.monotonic()
            if self._reaper is None:
                self._reaper = threading.Timer(self.idle_seconds, self._end_if_idle)
                self._reaper.daemon = True
                self._reaper.start()

    def _end_if_idle(self) -> None:
        with self._lock:
            self._reaper = None
            idle = time.monotonic() - self._last_drawn
            if self._drawing or idle < self.idle_seconds:  # drawn meanwhile: look again when that one is idle
                self._reaper = threading.Timer(max(self.idle_seconds - idle, 0.1), self._end_if_idle)
                self._reaper.daemon = True
                self._reaper.start()
                return
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        log.warning("discarding the graph-drawing process")
        for process in list(getattr(pool, "_processes", {}).values()):  # a stuck child is ended, not waited for
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)


_shared: GraphProcess | None = None
_shared_lock = threading.Lock()


def shared() -> GraphProcess:
    """This process's drawing process (every bot built in it draws there; ended at exit)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = GraphProcess()
            atexit.register(_shared.close)
        return _shared
