"""The approval desk's eyes on the mesh: a fresh diagnosis for an action's preconditions, and observations of
istiod's pushes and Envoy's counters for verification by effect.

Both go through what the bot already uses for ``/mesh diagnose``: the Diagnostician (single flight, the
runner the wiring chose) and the endpoint resolver (port-forwards, ``MESHBOT_ISTIOD_URL``, the demo's mesh).
Everything here reports failure as data ("not checked: ...", "not measured: ..."), never as an exception:
an approval must not fail because a precondition could not be read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.diagnosis import DiagnosisResult
from commands.actions.dependencies import Diagnosis, Precondition, checks_for_needs, evaluate_needs
from commands.actions.effect import Observation, observe
from commands.cluster.endpoints import EndpointResolver
from commands.cluster.snapshot import SnapshotSource
from commands.errors import MeshbotError
from commands.findings import Finding
from commands.preconditions import Dependency

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

    def preconditions(self, needs: Sequence[Dependency], namespace: str | None
                      ) -> tuple[tuple[Precondition, ...], list[Finding]]:
        """Each of ``needs`` in ``namespace``, from a diagnosis run now; and that diagnosis's findings."""
        checks = checks_for_needs(needs)
        results = [self.diagnose(checks, self.istio_namespace)]
        if namespace and namespace != self.istio_namespace and any(d in needs for d in POD_DEPENDENCIES):
            results.append(self.diagnose(("status",), namespace))
        error = next((r.error for r in results if r.error), None)
        findings = [f for r in results for f in r.findings]
        return evaluate_needs(needs, namespace, Diagnosis(tuple(findings), checks, error)), findings

    def observe(self, namespace: str | None, *, traffic: bool = True) -> Observation:
        """istiod's pushes and (with ``traffic``) Envoy's counters in ``namespace`` now; an empty observation saying
        why on failure."""
        now = self.clock()
        try:
            snapshot = self.source().snapshot(("Pod",))
            return observe(self.endpoints(), snapshot, namespace, now, traffic=traffic)
        except MeshbotError as exc:
            return Observation(at=now, istiod_error=f"cannot read the cluster: {exc}")
        except Exception as exc:  # a bug must not fail an executed action; the log has the traceback
            log.exception("observing the mesh for verification failed")
            return Observation(at=now, istiod_error=f"internal error ({type(exc).__name__})")
