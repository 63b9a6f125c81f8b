"""Running diagnostics for the bot: one run per (checks, namespace) at a time, a few runs at once, the rest queued.

When fifty people type ``/mesh diagnose prod`` during an outage, the cluster is
read once: requests arriving while an identical diagnosis is running wait for
its result instead of starting their own (single flight).  Different diagnoses
take turns: at most ``max_running`` read the cluster and run checks at once,
the others wait in arrival order and are told how many are ahead of them, so a
storm of alerts neither exhausts meshbot's memory nor floods the API server.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field

from bot.cluster import ClusterAccess
from bot.settings import DEFAULT_MAX_DIAGNOSES
from commands.checks.registry import CheckRegistry
from commands.errors import MeshbotError
from commands.findings import Finding
from commands.resources.references import PodRef

log = logging.getLogger(__name__)

MAX_RUNNING_DIAGNOSES = DEFAULT_MAX_DIAGNOSES
"""The cap when none is given (MESHBOT_MAX_DIAGNOSES; bot/settings.py says why four)."""


@dataclass(frozen=True)
class DiagnosisResult:
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    """Set when the diagnosis could not run at all (bad kubeconfig, a bug): a sentence for humans."""
    queued_seconds: float = 0.0
    """How long it waited for its turn (not part of ``seconds``)."""


Runner = Callable[..., list[Finding]]
"""(checks, namespace, pods=()) -> findings."""

Queued = Callable[[int], object]
"""Told once, before a diagnosis waits, how many diagnoses are ahead of it (running and queued); its result is
ignored, so a Slack post can be passed as it is."""


def queued_text(ahead: int) -> str:
    """The thread's note while a diagnosis waits for its turn."""
    noun = "diagnosis" if ahead == 1 else "diagnoses"
    return f":hourglass_flowing_sand: Queued behind {ahead} {noun}; it starts as soon as one finishes."


class DiagnosisQueue:
    """At most ``limit`` runs at once; the others wait first come, first served, without holding a thread.

    A run asks for its turn with ``request(start)``: ``start()`` is called at once when a place is free, else by
    the run that frees one (``done``).  Waiting costs a closure, not a worker: 1,000 ``/mesh`` requests once held
    all 16 workers while they waited for one of the four places, and a button that needs a worker waited behind
    them."""

    def __init__(self, limit: int):
        self.limit = max(limit, 1)
        self._running = 0
        self._waiting: deque[Callable[[], None]] = deque()
        self._lock = threading.Lock()

    @property
    def depth(self) -> int:
        """Diagnoses running or waiting now."""
        with self._lock:
            return self._running + len(self._waiting)

    def request(self, start: Callable[[], None], on_queued: Queued | None = None) -> None:
        """``start()`` when this run's turn comes (it must be quick: submit, set an event); the run calls ``done()``
        when it ends.  ``on_queued(ahead)`` first when it has to wait."""
        with self._lock:
            ahead = self._running + len(self._waiting)
            now = self._running < self.limit and not self._waiting
            if now:
                self._running += 1
            else:
                self._waiting.append(start)
        if now:
            start()
        else:
            _tell(on_queued, ahead)

    def done(self) -> None:
        """A run ended: its place goes to the first waiting run, if any."""
        with self._lock:
            if self._waiting:
                start: Callable[[], None] | None = self._waiting.popleft()  # the place changes hands
            else:
                self._running -= 1
                start = None
        if start is not None:
            start()

    def submit(self, workers: Executor, work: Callable[[], None], *, refused: Callable[[], None],
               on_queued: Queued | None = None) -> None:
        """``work()`` on ``workers`` in its turn, the place given back when it ends; ``refused()`` instead when the
        pool takes nothing new (meshbot is stopping)."""
        def in_turn() -> None:
            try:
                work()
            finally:
                self.done()

        def start() -> None:
            try:
                workers.submit(in_turn)
            except RuntimeError:
                self.done()
                refused()

        self.request(start, on_queued)

    @contextlib.contextmanager
    def turn(self, on_queued: Queued | None = None) -> Iterator[None]:
        """The calling thread waits for its turn and runs in it (the incident flow's triage steps)."""
        granted = threading.Event()
        self.request(granted.set, on_queued)
        granted.wait()
        try:
            yield
        finally:
            self.done()


def _tell(on_queued: Queued | None, ahead: int) -> None:
    """Outside the queue's lock (it talks to Slack); a failure to tell must not cost the diagnosis its turn."""
    if on_queued is None:
        return
    try:
        on_queued(ahead)
    except Exception:
        log.warning("could not say that a diagnosis is queued behind %d", ahead, exc_info=True)


class Diagnostician:
    def __init__(self, cluster: ClusterAccess, checks: CheckRegistry, *, runner: Runner | None = None,
                 max_running: int = MAX_RUNNING_DIAGNOSES):
        self.cluster = cluster
        self.checks = checks
        self._runner = runner or self._diagnose
        self._lock = threading.Lock()
        self._running: dict[tuple, Future[DiagnosisResult]] = {}
        self.queue = DiagnosisQueue(max_running)

    def _diagnose(self, checks: Sequence[str], namespace: str | None, pods: Sequence[PodRef] = ()) -> list[Finding]:
        endpoints = self.cluster.endpoints()
        endpoints.focus_pods = tuple(pods)
        return self.checks.diagnose(checks, self.cluster.source(namespace), namespace=namespace,
                                    now=self.cluster.now(), thresholds=self.cluster.thresholds(), endpoints=endpoints)

    def run(self, checks: Sequence[str], namespace: str | None, pods: Sequence[PodRef] = (), *,
            on_queued: Queued | None = None, in_turn: bool = False) -> DiagnosisResult:
        """The findings of ``checks``; ``on_queued(ahead)`` is called when it has to wait for its turn first.
        ``in_turn``: the caller holds a turn already (an incident's triage, whose steps run one after another in
        one turn), so this run takes none."""
        key = (tuple(checks), namespace, tuple(pods))
        with self._lock:
            running = self._running.get(key)
            # Inside a turn only a run that has started is joined: a queued one may be waiting for this very turn.
            if running is not None and (not in_turn or running.running() or running.done()):
                joined = running
            else:
                joined = None
                running = Future()
                self._running.setdefault(key, running)
        if joined is not None:
            return joined.result()
        try:
            queued = time.monotonic()
            with contextlib.nullcontext() if in_turn else self.queue.turn(on_queued):
                running.set_running_or_notify_cancel()
                waited = time.monotonic() - queued
                result = self._run_once(checks, namespace, tuple(pods))
            result = DiagnosisResult(result.findings, result.seconds, result.error, queued_seconds=waited)
            running.set_result(result)
            return result
        except BaseException as exc:
            running.set_exception(exc)  # whoever joined this run must not wait forever
            raise
        finally:
            self._forget(key, running)

    def submit(self, checks: Sequence[str], namespace: str | None, *, workers: Executor,
               on_queued: Queued | None = None) -> Future[DiagnosisResult]:
        """``run`` without holding the caller's thread: the run starts on ``workers`` when its turn comes.  A request
        for a diagnosis already running or queued gets that run's future (single flight before any worker is taken:
        joining inside ``run`` only joined the requests that already had a worker)."""
        key = (tuple(checks), namespace, ())
        with self._lock:
            running = self._running.get(key)
            if running is not None:
                return running
            future = self._running[key] = Future()
        queued = time.monotonic()

        def refused() -> None:
            self._forget(key, future)
            future.set_result(DiagnosisResult(error="meshbot is stopping; ask again once it is back"))

        self.queue.submit(workers, lambda: self._own(key, future, checks, namespace, queued), refused=refused,
                          on_queued=on_queued)
        return future

    def _own(self, key: tuple, future: Future[DiagnosisResult], checks: Sequence[str], namespace: str | None,
             queued: float) -> None:
        waited = time.monotonic() - queued
        future.set_running_or_notify_cancel()
        try:
            result = self._run_once(checks, namespace, ())
        except BaseException as exc:
            self._forget(key, future)
            future.set_exception(exc)
            raise
        self._forget(key, future)  # a request from now on starts a fresh run
        future.set_result(DiagnosisResult(result.findings, result.seconds, result.error, queued_seconds=waited))

    def _forget(self, key: tuple, future: Future[DiagnosisResult]) -> None:
        with self._lock:
            if self._running.get(key) is future:  # not a queued run registered under the same key meanwhile
                del self._running[key]

    def _run_once(self, checks: Sequence[str], namespace: str | None, pods: tuple[PodRef, ...]) -> DiagnosisResult:
        started = time.monotonic()
        try:
            findings = self._runner(checks, namespace, pods) if pods else self._runner(checks, namespace)
        except MeshbotError as exc:
            return DiagnosisResult(seconds=time.monotonic() - started, error=str(exc))
        except Exception as exc:  # a bug: the user still gets an answer, the log gets the traceback
            log.exception("diagnosis %s %s failed", checks, namespace)
            return DiagnosisResult(seconds=time.monotonic() - started,
                                   error=f"internal error ({type(exc).__name__}); see meshbot's log")
        return DiagnosisResult(findings=findings, seconds=time.monotonic() - started)
