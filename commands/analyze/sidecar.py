"""Sidecar workload selector analyzers: selectors matching nothing, overlapping or missing selectors."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from commands.analyze import analyzer, report
from commands.checks.registry import CheckContext
from commands.cluster.selectors import PodIndex, format_selector
from commands.cluster.snapshot import Resource, Snapshot
from commands.codes import go_list
from commands.findings import Finding
from commands.shapes import mapping


def workload_labels(sidecar: Resource) -> dict[str, str] | None:
    """``workloadSelector.labels``; None when the Sidecar has no workloadSelector at all."""
    selector = sidecar.spec.get("workloadSelector")
    if selector is None:
        return None
    return {str(k): str(v) for k, v in mapping(mapping(selector).get("labels")).items()}


class WorkloadEntryIndex:
    """WorkloadEntries indexed like pods, by their metadata and spec labels together."""

    def __init__(self, snapshot: Snapshot):
        self.trusted = snapshot.can_trust_absence("WorkloadEntry")
        self._index = PodIndex(as_workload(entry) for entry in snapshot.of_kind("WorkloadEntry"))

    def any_match(self, selector: Mapping[str, str], namespace: str | None) -> bool:
        """True when an entry matches, and also when WorkloadEntries could not be read."""
        return not self.trusted or self._index.any_match(selector, namespace)


def as_workload(entry: Resource) -> Resource:
    """A WorkloadEntry as a Resource whose labels are the ones Istio selects it by."""
    labels: dict[str, Any] = {**entry.labels, **mapping(entry.spec.get("labels"))}
    metadata = {**entry.metadata, "labels": labels}
    return Resource(entry.api_version, entry.kind, entry.name, entry.namespace, {**entry.body, "metadata": metadata})


@analyzer("sidecar.SelectorAnalyzer", inputs=("Sidecar", "Pod"))
def selectors(ctx: CheckContext) -> list[Finding]:
    """IST0101 when a workloadSelector matches no pod in its namespace; IST0110 when two select one pod."""
    pods = PodIndex.of(ctx.snapshot)
    entries = WorkloadEntryIndex(ctx.snapshot)
    findings: list[Finding] = []
    sidecars_of_pod: dict[tuple[str, str | None, str], list[Resource]] = defaultdict(list)
    for sidecar in ctx.snapshot.of_kind("Sidecar"):
        labels = workload_labels(sidecar)
        if not labels:
            continue
        selected = pods.select(labels, sidecar.namespace)
        for pod in selected:
            sidecars_of_pod[pod.key].append(sidecar)
        # A Sidecar also configures VMs; istioctl counts pods only, meshbot counts WorkloadEntries too.
        if not selected and not entries.any_match(labels, sidecar.namespace):
            findings.append(report("IST0101", sidecar, reftype="selector", refval=format_selector(labels)))
    for (_, namespace, pod_name), sidecars in sidecars_of_pod.items():
        if len(sidecars) > 1:
            names = go_list(sorted(s.name for s in sidecars))
            findings.extend(report("IST0110", s, sidecars=names, namespace=namespace, pod=pod_name) for s in sidecars)
    return findings


@analyzer("sidecar.DefaultSelectorAnalyzer", inputs=("Sidecar",))
def default_selectors(ctx: CheckContext) -> list[Finding]:
    """IST0111 on every Sidecar without workloadSelector when a namespace has more than one."""
    by_namespace: dict[str, list[Resource]] = defaultdict(list)
    for sidecar in ctx.snapshot.of_kind("Sidecar"):
        # An empty workloadSelector is still a selector to istioctl; only a missing one counts.
        if workload_labels(sidecar) is None:
            by_namespace[sidecar.namespace or ""].append(sidecar)
    findings: list[Finding] = []
    for namespace, sidecars in by_namespace.items():
        if len(sidecars) < 2:
            continue
        names = go_list(sorted(s.name for s in sidecars))
        findings.extend(report("IST0111", s, sidecars=names, namespace=namespace) for s in sidecars)
    return findings
