"""Policy workload selectors that match no workload: AuthorizationPolicy (IST0127), Telemetry (IST0101).

istioctl checks exactly these two kinds; PeerAuthentication and RequestAuthentication
selectors are not analyzed by it, so meshbot does not report them either.
"""

from __future__ import annotations

from collections.abc import Mapping

from commands.analyze import analyzer, report
from commands.analyze.injection import INJECT_ANNOTATION, namespace_injection, pod_opts_out
from commands.analyze.sidecar import WorkloadEntryIndex, as_workload
from commands.checks.registry import CheckContext
from commands.cluster.injection import NamespaceInjection
from commands.cluster.pods import sidecar_spec
from commands.cluster.selectors import PodIndex, format_selector
from commands.cluster.snapshot import Resource, Snapshot
from commands.findings import Finding
from commands.shapes import mapping, mappings

AMBIENT_REDIRECTION_ANNOTATION = "ambient.istio.io/redirection"


def match_labels(policy: Resource) -> dict[str, str] | None:
    """``selector.matchLabels``; None when the policy has no selector at all."""
    selector = policy.spec.get("selector")
    if selector is None:
        return None
    return {str(k): str(v) for k, v in mapping(mapping(selector).get("matchLabels")).items()}


def targets_by_reference(policy: Resource) -> bool:
    """A targetRef/targetRefs policy attaches to a Gateway, Service or waypoint, not to selected pods."""
    return bool(policy.spec.get("targetRef") or policy.spec.get("targetRefs"))


class MeshWorkloads:
    """Workloads a policy can take effect on: in-mesh pods and WorkloadEntries, indexed by labels."""

    def __init__(self, snapshot: Snapshot):
        namespaces = namespace_injection(snapshot)
        workloads = [pod for pod in snapshot.of_kind("Pod") if in_mesh(pod, namespaces.get(pod.namespace or ""))]
        # VMs are workloads too (istioctl counts pods only): counting them avoids false alarms.
        workloads += [as_workload(entry) for entry in snapshot.of_kind("WorkloadEntry")]
        self.index = PodIndex(workloads)
        self.namespaces = {w.namespace for w in workloads}
        self.complete = snapshot.can_trust_absence("WorkloadEntry")

    def any_match(self, selector: Mapping[str, str], namespace: str | None) -> bool:
        """Any workload matching ``selector`` (in ``namespace``, or anywhere when None)."""
        if not self.complete:
            return True
        if not selector:
            return namespace is None or namespace in self.namespaces
        return self.index.any_match(selector, namespace)


def in_mesh(pod: Resource, namespace: NamespaceInjection | None) -> bool:
    """Has a sidecar or ambient redirection, or will get a sidecar on restart (istioctl's PodInMesh)."""
    if sidecar_spec(pod) is not None or pod.annotations.get(AMBIENT_REDIRECTION_ANNOTATION) == "enabled":
        return True
    if INJECT_ANNOTATION in pod.annotations or INJECT_ANNOTATION in pod.labels:
        return not pod_opts_out(pod)
    # istioctl honours only istio-injection=enabled here; a revision label or ambient mode
    # enrols the namespace just as well, so they count too.
    return namespace is not None and namespace.enrolled


@analyzer("auth.AuthorizationPoliciesAnalyzer", inputs=("AuthorizationPolicy", "Pod", "Namespace"))
def authorization_policies(ctx: CheckContext) -> list[Finding]:
    """IST0127 when an AuthorizationPolicy selects no in-mesh workload; IST0101 for a source
    namespace (or notNamespace) pattern that matches no namespace."""
    findings = unknown_source_namespaces(ctx.snapshot)
    policies = [p for p in ctx.snapshot.of_kind("AuthorizationPolicy") if not targets_by_reference(p)]
    if not policies:
        return findings
    workloads = MeshWorkloads(ctx.snapshot)
    root = str(ctx.snapshot.mesh_config.get("rootNamespace") or ctx.snapshot.istio_namespace)
    for policy in policies:
        labels = match_labels(policy)
        if policy.namespace == root:
            # Mesh-wide: a selector may match workloads in any namespace; no selector is always fine.
            if labels is not None and not workloads.any_match(labels, None):
                findings.append(report("IST0127", policy, labels=format_selector(labels)))
        elif not workloads.any_match(labels or {}, policy.namespace):
            findings.append(report("IST0127", policy, labels=format_selector(labels or {})))
    return findings


def unknown_source_namespaces(snapshot: Snapshot) -> list[Finding]:
    """IST0101 for each ``rules[].from[].source.namespaces``/``notNamespaces`` entry matching no namespace.

    istio/istio pkg/config/analysis/analyzers/authz/authorizationpolicies.go (analyzeNamespaceNotFound).
    A namespace exists when a Namespace object or any object in the snapshot names it.  Files that hold
    no Namespace object at all say nothing about which namespaces exist, so nothing is reported then
    (istioctl would flag every reference).
    """
    if not snapshot.of_kind("Namespace"):
        return []
    namespaces = snapshot.namespaces()
    findings: list[Finding] = []
    for policy in snapshot.of_kind("AuthorizationPolicy"):
        for rule in mappings(policy.spec.get("rules")):
            for source_rule in mappings(rule.get("from")):
                source = mapping(source_rule.get("source"))
                for pattern in [*(source.get("namespaces") or ()), *(source.get("notNamespaces") or ())]:
                    if not any(namespace_matches(ns, str(pattern)) for ns in namespaces):
                        findings.append(report("IST0101", policy, reftype="namespace", refval=str(pattern)))
    return findings


def namespace_matches(namespace: str, pattern: str) -> bool:
    """Istio's namespace pattern: ``*``, ``*suffix``, ``prefix*``, or a name (compared case-insensitively)."""
    if pattern == "*":
        return True
    if pattern.startswith("*"):
        return namespace.endswith(pattern[1:])
    if pattern.endswith("*"):
        return namespace.startswith(pattern[:-1])
    return namespace.lower() == pattern.lower()


@analyzer("telemetry.SelectorAnalyzer", inputs=("Telemetry", "Pod"))
def telemetry_selectors(ctx: CheckContext) -> list[Finding]:
    """IST0101 when a Telemetry's selector matches no pod in its namespace."""
    pods = PodIndex.of(ctx.snapshot)
    entries = WorkloadEntryIndex(ctx.snapshot)
    findings: list[Finding] = []
    for telemetry in ctx.snapshot.of_kind("Telemetry"):
        labels = match_labels(telemetry)
        if not labels or targets_by_reference(telemetry):
            continue
        if not pods.any_match(labels, telemetry.namespace) and not entries.any_match(labels, telemetry.namespace):
            findings.append(report("IST0101", telemetry, reftype="selector", refval=format_selector(labels)))
    return findings
