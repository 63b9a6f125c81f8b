"""Running diagnostics for the bot: one run per (checks, namespace) at a time, shared by everyone who asked.

When fifty people type ``/mesh diagnose prod`` during an outage, the cluster is
read once: requests arriving while an identical diagnosis is running wait for
its result instead of starting their own (single flight).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from bot.cluster import ClusterAccess
from commands.checks.registry import CheckRegistry
from commands.resources.references import PodRef
from commands.errors import MeshbotError
from commands.findings import Finding

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiagnosisResult:
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    """Set when the diagnosis could not run at all (bad kubeconfig, a bug): a sentence for humans."""


Runner = Callable[..., list[Finding]]
"""(checks, namespace, pods=()) -> findings."""


class Diagnostician:
    def __init__(self, cluster: ClusterAccess, checks: CheckRegistry, *, runner: Runner | None = None):
        self.cluster = cluster
        self.checks = checks
        self._runner = runner or self._diagnose
        self._lock = threading.Lock()
        self._running: dict[tuple, Future[DiagnosisResult]] = {}

    def _diagnose(self, checks: Sequence[str], namespace: str | None, pods: Sequence[PodRef] = ()) -> list[Finding]:
        endpoints = self.cluster.endpoints()
        endpoints.focus_pods = tuple(pods)
        return self.checks.diagnose(checks, self.cluster.source(), namespace=namespace, now=self.cluster.now(),
                                    thresholds=self.cluster.thresholds(), endpoints=endpoints)

    def run(self, checks: Sequence[str], namespace: str | None, pods: Sequence[PodRef] = ()) -> DiagnosisResult:
        key = (tuple(checks), namespace, tuple(pods))
        with self._lock:
            running = self._running.get(key)
            owner = running is None
            if owner:
                running = self._running[key] = Future()
        if not owner:
            return running.result()
        try:
            result = self._run_once(checks, namespace, tuple(pods))
            running.set_result(result)
            return result
        finally:
            with self._lock:
                self._running.pop(key, None)

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
