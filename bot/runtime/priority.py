"""Answers first: while Slack waits for meshbot's ack, background work waits for its turn.

Slack gives a slash command 3 s for its ack, and meshbot acks before it diagnoses.  The acks share one interpreter
lock with the work they start (the "Running…" post, the namespace check, the diagnosis, the outbox's posts), and
Python threads have no priorities, so under a storm each ack waited for a share of the lock behind that work.
Measured on ``bench/bench_slack.py`` (1,000 ``/mesh`` requests, 50 in flight): the serving process spent 5.3 ms of
CPU per request while acks were arriving, only ~1.7 ms of it on the ack itself, and the ack p50 was 50 x 5.3 ms as
Little's law says (244 ms, p99 416 ms).  A first version of this module alone gave p50 91-99 ms, p99 146-167 ms
(docs/benchmarks.md, which also has what the acks cost now).

So background work starts only in a quiet moment: a task handed to a ``YieldingPool``, or a loop's pass that is
given ``Answering.wait_for_quiet``, first waits until no ack has been worked on for ``QUIET_SECONDS``, at most
``patience`` seconds (MESHBOT_ANSWERS_FIRST_SECONDS).  The bound matters: under a storm that never pauses, the work
still starts, ``patience`` late, instead of starving; and work already running is never paused (a diagnosis that
started goes on sharing the lock, which is why MESHBOT_MAX_DIAGNOSES caps how many run at once).

What it costs: during a burst, the "Running…" post and the first step of each diagnosis start up to ``patience``
later, and the burst's acks are done sooner, so the outcomes are not later (docs/benchmarks.md); after a single
command, 50 ms.  What is counted is decided by ``bot.server.http``: Slack requests whose signature is valid, so
nobody without the signing secret can hold background work back.  Alertmanager's webhook is not counted (its p99
met its target the same with and without, and a route without a signature must not hold anything back), nor are
Socket Mode's acks, which go over its WebSocket.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

QUIET_SECONDS = 0.05
"""How long no ack must have been worked on for a moment to count as quiet.  Between two acks of a burst there are
gaps (a request read by the socket loop, queued for a thread, checked against the signature: none of it counted);
a wait that ended in the first gap let the work behind the burst in at once.  Measured: counting only the signed part
of each ack without this, the bench's ack p99 was 143-229 ms over three runs; 50 ms is far above those gaps (1-2 ms
at 50 senders) and costs a single command's "Running…" post 50 ms."""


class Answering:
    """How many acks are being worked on, and when the last one ended; background work asks ``wait_for_quiet``."""

    def __init__(self, patience: float, *, quiet: float = QUIET_SECONDS, clock: Callable[[], float] = time.monotonic,
                 on_wait: Callable[[float], None] | None = None):
        """``on_wait`` is told how long each wait lasted (``meshbot_background_wait_seconds``)."""
        if patience < 0:
            raise ValueError(f"patience must be 0 (background work never waits) or more, not {patience}")
        self.patience = patience
        self.quiet = quiet
        self._clock = clock
        self._on_wait = on_wait
        self._in_flight = 0
        self._last_end = float("-inf")
        self._changed = threading.Condition()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextmanager
    def answer(self) -> Iterator[None]:
        """Around the work of one ack Slack is waiting for."""
        with self._changed:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._changed:
                self._in_flight -= 1
                self._last_end = self._clock()
                if not self._in_flight:
                    self._changed.notify_all()

    def wait_for_quiet(self) -> float:
        """Wait until no ack has been worked on for ``quiet`` seconds, at most ``patience`` seconds; how long it
        waited."""
        began = self._clock()
        # Unlocked reads: a stale answer only means starting at once, as before this ack.
        if not self.patience or (not self._in_flight and began >= self._last_end + self.quiet):
            return 0.0
        deadline = began + self.patience
        with self._changed:
            while True:
                now = self._clock()
                if now >= deadline:
                    break
                if self._in_flight:
                    self._changed.wait(deadline - now)
                    continue
                settled_at = self._last_end + self.quiet
                if now >= settled_at:
                    break
                self._changed.wait(min(settled_at, deadline) - now)
        waited = self._clock() - began
        if self._on_wait is not None:
            self._on_wait(waited)
        return waited


class YieldingPool(ThreadPoolExecutor):
    """A thread pool whose tasks each wait for a quiet moment (``Answering.wait_for_quiet``) before they start."""

    def __init__(self, answering: Answering, max_workers: int, thread_name_prefix: str = ""):
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self.answering = answering

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        def after_answers() -> Any:
            self.answering.wait_for_quiet()
            return fn(*args, **kwargs)

        return super().submit(after_answers)
