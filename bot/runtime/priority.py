"""Answers first: while a sender waits for meshbot's answer, background work waits for its turn.

Slack gives a slash command 3 s for its ack, and meshbot acks before it diagnoses; Alertmanager waits for the
webhook's answer.  All of it shares one interpreter lock with the work the answers start (the "Running…" post, the
namespace check, the diagnosis, the outbox's posts).  Python threads have no priorities, so under a storm each ack
waited for a share of the lock behind that work.  Measured on ``bench/bench_slack.py`` (1,000 ``/mesh`` requests,
50 in flight): the serving process spent 5.3 ms of CPU per request while acks were arriving, only ~1.7 ms of it
on the ack itself, and the ack p50 was 50 x 5.3 ms as Little's law says (244 ms, p99 416 ms).  With this module
the p50 was 91-99 ms and the p99 146-167 ms (docs/benchmarks.md, which also has what the acks cost now).

So background work starts only in a quiet moment: a task handed to a ``YieldingPool``, or a loop's pass that is
given ``Answering.wait_for_quiet``, first waits until no answer is being worked on, at most ``patience``
seconds (MESHBOT_ANSWERS_FIRST_SECONDS).  The bound matters: under a storm that never pauses, the work still
starts, ``patience`` late, instead of starving; and work already running is never paused (a diagnosis that
started goes on sharing the lock, which is why MESHBOT_MAX_DIAGNOSES caps how many run at once).

What it costs: the "Running…" post and the first step of each diagnosis start up to ``patience`` later during a
burst, and the burst's answers are done sooner, so the last result is not later (measured in
docs/benchmarks.md).  Socket Mode answers over its WebSocket, not through the HTTP server, so they are not
counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any


class Answering:
    """How many answers are being worked on; background work asks ``wait_for_quiet`` before it starts."""

    def __init__(self, patience: float, *, clock: Callable[[], float] = time.monotonic):
        if patience < 0:
            raise ValueError(f"patience must be 0 (background work never waits) or more, not {patience}")
        self.patience = patience
        self._clock = clock
        self._in_flight = 0
        self._quiet = threading.Condition()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextmanager
    def answer(self) -> Iterator[None]:
        """Around the work of one answer a sender is waiting for."""
        with self._quiet:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._quiet:
                self._in_flight -= 1
                if not self._in_flight:
                    self._quiet.notify_all()

    def wait_for_quiet(self) -> float:
        """Wait until no answer is being worked on, at most ``patience`` seconds; how long it waited."""
        if not self.patience or not self._in_flight:  # unlocked read: a stale 0 only means starting at once
            return 0.0
        began = self._clock()
        deadline = began + self.patience
        with self._quiet:
            while self._in_flight:
                left = deadline - self._clock()
                if left <= 0:
                    break
                self._quiet.wait(left)
        return self._clock() - began


class YieldingPool(ThreadPoolExecutor):
    """A thread pool whose tasks each wait for a quiet moment (``Answering.wait_for_quiet``) before they start."""

    def __init__(self, answering: Answering, max_workers: int, thread_name_prefix: str = "",
                 on_wait: Callable[[float], None] | None = None):
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self.answering = answering
        self._on_wait = on_wait

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        def after_answers() -> Any:
            waited = self.answering.wait_for_quiet()
            if waited and self._on_wait is not None:
                self._on_wait(waited)
            return fn(*args, **kwargs)

        return super().submit(after_answers)
