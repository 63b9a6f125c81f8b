"""The approval desk's eyes on the mesh: a fresh diagnosis for an action's preconditions, observations of
istiod's pushes and of the failing edges' traffic (Prometheus, else Envoy's counters) for verification by effect,
and the callers of what an action touches for its card.

Preconditions go through what the bot already uses for ``/mesh diagnose``: the Diagnostician (single flight, the
runner the wiring chose) and the endpoint resolver (port-forwards, ``MESHBOT_ISTIOD_URL``, the demo's mesh);
the re-check right before the first write reads the API server directly (``uncached_diagnosis``).
Everything here reports failure as data ("not checked: ...", "not measured: ..."), never as an exception:
an approval must not fail because a precondition could not be read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime

from bot.cluster import ClusterAccess
from bot.diagnosis import DiagnosisResult
from commands.actions.dependencies import Diagnosis, Precondition, checks_for_needs, evaluate_needs
from commands.actions.effect import Edge, Observation, observe
from commands.checks.registry import CheckRegistry
from commands.clients.prometheus import PrometheusApi
from commands.cluster.endpoints import EndpointResolver
from commands.cluster.snapshot import SnapshotSource
from commands.cluster.sources.kube import KubeSource
from commands.errors import MeshbotError
from commands.findings import Finding
from commands.preconditions import Dependency
from commands.telemetry.callers import Caller, callers_of
from commands.telemetry.recovery import Counts, edge_counts, failing_edges_before

log = logging.getLogger(__name__)

POD_DEPENDENCIES = (Dependency.INJECTION, Dependency.REVISION)
"""Judged in the acted-in namespace (webhook selectors and revision labels are per namespace)."""


@dataclass
class MeshInspector:
    diagnose: Callable[[Sequence[str], str | None], DiagnosisResult]
    """``Diagnostician.run``: (checks, namespace) -> findings or why not."""
    endpoints: Callable[[], EndpointResolver]
    source: Callable[[], SnapshotSource]
    istio_namespace: str
    clock: Callable[[], datetime]
    diagnose_fresh: Callable[[Sequence[str], str | None], DiagnosisResult] | None = None
    """The same diagnosis with every read straight from the API server (None: ``diagnose``), for the re-check right
    before the first write: the shared view serves a namespace's pods for up to 10 s (``bot.cluster``), and istiod
    may have stopped being Ready in between."""
    prometheus: Callable[[], PrometheusApi | None] = lambda: None
    """A Prometheus with Istio's metrics for each look (closed after it), or None when none is configured."""

    def preconditions(self, needs: Sequence[Dependency], namespace: str | None, *, fresh: bool = False
                      ) -> tuple[tuple[Precondition, ...], list[Finding]]:
        """Each of ``needs`` in ``namespace``, from a diagnosis run now (``fresh``: nothing read earlier is reused);
        and that diagnosis's findings."""
        diagnose = self.diagnose_fresh if fresh and self.diagnose_fresh else self.diagnose
        checks = checks_for_needs(needs)
        results = [diagnose(checks, self.istio_namespace)]
        if namespace and namespace != self.istio_namespace and any(d in needs for d in POD_DEPENDENCIES):
            results.append(diagnose(("status",), namespace))
        error = next((r.error for r in results if r.error), None)
        findings = [f for r in results for f in r.findings]
        return evaluate_needs(needs, namespace, Diagnosis(tuple(findings), checks, error)), findings

    def observe(self, namespace: str | None, *, traffic: bool = True,
                baseline: Observation | None = None) -> Observation:
        """istiod's pushes in ``namespace`` now and, with ``traffic``, the failing edges' traffic: from Prometheus
        when one is configured (without ``baseline``: the edges failing in the minutes before now; with it: those
        edges since the baseline), from Envoy's counters when there is none or it fails.  Without ``baseline``
        Envoy is read either way, so a Prometheus that fails later still leaves a baseline to compare against.
        An observation saying why on failure, never an exception."""
        now = self.clock()
        windowed, url, error = self._traffic(namespace, now, baseline) if traffic else (None, None, None)
        envoy = traffic and (baseline is None or windowed is None or baseline.windowed is None)
        try:
            snapshot = self.source().snapshot(("Pod",))
            seen = observe(self.endpoints(), snapshot, namespace, now, traffic=envoy)
        except MeshbotError as exc:
            seen = Observation(at=now, istiod_error=f"cannot read the cluster: {exc}")
        except Exception as exc:  # a bug must not fail an executed action; the log has the traceback
            log.exception("observing the mesh for verification failed")
            seen = Observation(at=now, istiod_error=f"internal error ({type(exc).__name__})")
        return replace(seen, windowed=windowed, prometheus=url, prometheus_error=error)

    def _traffic(self, namespace: str | None, now: datetime, baseline: Observation | None
                 ) -> tuple[dict[str, Edge] | None, str | None, str | None]:
        """(the edges' requests and failures from Prometheus or None, its URL, why it failed)."""
        if baseline is not None and baseline.windowed is None:
            return None, baseline.prometheus, None  # no Prometheus baseline: Envoy's counters judge
        with self._prometheus() as prometheus:
            if prometheus is None:
                return None, None, None
            try:
                if baseline is None:
                    counts = failing_edges_before(prometheus, namespace, now)
                else:
                    counts = edge_counts(prometheus, namespace, sorted(baseline.windowed or {}), now,
                                         now - baseline.at)
            except MeshbotError as exc:
                return None, prometheus.url, str(exc)
            return _as_edges(counts), prometheus.url, None

    def callers(self, namespace: str, workload: str | None) -> list[Caller] | None:
        """Who called ``workload`` (None: any workload) in ``namespace`` over the last hour, from Prometheus; None
        when none is configured.  Raises ``MeshbotError`` when Prometheus fails (the card says so)."""
        with self._prometheus() as prometheus:
            if prometheus is None:
                return None
            return callers_of(prometheus, namespace, workload, self.clock())

    @contextmanager
    def _prometheus(self) -> Iterator[PrometheusApi | None]:
        prometheus = self.prometheus()
        try:
            yield prometheus
        finally:
            close = getattr(prometheus, "close", None)  # the live client holds a connection pool; captures none
            if close is not None:
                close()


def _as_edges(counts: Mapping[str, Counts]) -> dict[str, Edge]:
    # increase() extrapolates to the window's edges, so counts are fractional; whole requests read better.
    return {key: Edge(round(requests), round(errors)) for key, (requests, errors) in counts.items()}


def uncached_diagnosis(cluster: ClusterAccess, checks: CheckRegistry
                       ) -> Callable[[Sequence[str], str | None], DiagnosisResult]:
    """A diagnosis whose every list goes to the API server, for ``MeshInspector.diagnose_fresh``.

    Not through the Diagnostician: its single flight would join a diagnosis that began before the caller asked,
    and its shared view reuses a namespace's pods for up to 10 s."""
    def run(names: Sequence[str], namespace: str | None) -> DiagnosisResult:
        started = time.monotonic()
        source = cluster.source(namespace)
        if isinstance(source, KubeSource):
            source.reads = source.client  # straight to the API server, not the shared view (a scenario is frozen)
        try:
            findings = checks.diagnose(names, source, namespace=namespace, now=cluster.now(),
                                       thresholds=cluster.thresholds(), endpoints=cluster.endpoints())
        except MeshbotError as exc:
            return DiagnosisResult(seconds=time.monotonic() - started, error=str(exc))
        except Exception as exc:  # a bug: the check says "not checked", the log has the traceback
            log.exception("the fresh diagnosis %s %s failed", names, namespace)
            return DiagnosisResult(seconds=time.monotonic() - started, error=f"internal error ({type(exc).__name__})")
        return DiagnosisResult(findings=findings, seconds=time.monotonic() - started)
    return run
