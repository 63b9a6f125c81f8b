"""The mutual TLS mode a workload port accepts, composed from PeerAuthentications as istiod composes it.

Rules (istio/istio pilot/pkg/model/authentication.go ``GetPeerAuthenticationsForWorkload`` and
pilot/pkg/security/authn/policy_applier.go ``ComposePeerAuthentication``; istio.io/latest/docs/reference/config/
security/peer_authentication/):

- the mesh-wide policy is a selector-less one in the root namespace, the namespace-wide one a selector-less one
  in the workload's namespace; when several exist at one level, the oldest (then the first by name) applies;
- a workload policy (with a selector matching the pod) overrides them; its ``portLevelMtls``, keyed by the port
  the workload listens on, overrides its own ``mtls``;
- ``UNSET`` (or no mode) inherits from the level above; with nothing set the mode is PERMISSIVE.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from commands.cluster.selectors import matches
from commands.cluster.snapshot import Resource

STRICT, PERMISSIVE, DISABLE, UNSET = "STRICT", "PERMISSIVE", "DISABLE", "UNSET"


@dataclass(frozen=True)
class PeerMode:
    mode: str
    policy: str
    """``PeerAuthentication ns/name`` that decided, or ``Istio's default`` when none did."""


def _oldest(policies: Iterable[Resource]) -> Resource | None:
    ordered = sorted(policies, key=lambda p: (str(p.metadata.get("creationTimestamp") or ""), p.name))
    return ordered[0] if ordered else None


def _mode_of(setting: Any) -> str | None:
    mode = (setting or {}).get("mode") if isinstance(setting, Mapping) else None
    return None if mode in (None, "", UNSET) else str(mode)


def peer_mode(pod: Resource, port: int | None, policies: Iterable[Resource], root_namespace: str) -> PeerMode:
    """The mode ``pod`` accepts on ``port`` (the container port; None when it is not known)."""
    policies = list(policies)
    selectorless = [p for p in policies if not (p.spec.get("selector") or {}).get("matchLabels")]
    mesh = _oldest(p for p in selectorless if p.namespace == root_namespace)
    namespace = _oldest(p for p in selectorless if p.namespace == pod.namespace and p.namespace != root_namespace)
    workload = _oldest(p for p in policies if p.namespace == pod.namespace
                       and (labels := (p.spec.get("selector") or {}).get("matchLabels"))
                       and matches(labels, pod.labels))
    decided = PeerMode(PERMISSIVE, "Istio's default")
    for level in (mesh, namespace):
        if level is not None and (mode := _mode_of(level.spec.get("mtls"))):
            decided = PeerMode(mode, level.origin)
    if workload is not None:
        if mode := _mode_of(workload.spec.get("mtls")):
            decided = PeerMode(mode, workload.origin)
        port_levels = workload.spec.get("portLevelMtls") or {}
        if port is not None and (mode := _mode_of(port_levels.get(str(port)) or port_levels.get(port))):
            decided = PeerMode(mode, f"{workload.origin} port {port}")
    return decided
