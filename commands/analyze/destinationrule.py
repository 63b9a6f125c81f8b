"""DestinationRule analyzers: server certificate verification, unknown hosts, subsets without pods."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from commands.analyze import analyzer, report, unique
from commands.analyze.hosts import HostEntry, HostIndex
from commands.checks.registry import CheckContext
from commands.cluster.selectors import PodIndex, matches
from commands.cluster.snapshot import Resource, Snapshot
from commands.findings import Finding
from commands.shapes import mapping, mappings

TLS_MODES_NEEDING_CA = {"SIMPLE", "MUTUAL"}

# Istio adds these to endpoint labels from the pod's Node (or its own topology), which a
# snapshot does not hold; a subset selecting on them is not judged by pod labels alone.
NODE_DERIVED_LABELS = frozenset({
    "topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone",
    "kubernetes.io/hostname", "topology.istio.io/network", "topology.istio.io/cluster",
})


def _tls_without_ca(tls: Mapping[str, Any] | None, rule: Resource) -> str | None:
    """The TLS mode when it verifies the server but names no CA; credentialName on a gateway rule supplies one."""
    tls = mapping(tls)
    mode = str(tls.get("mode") or "")
    if mode not in TLS_MODES_NEEDING_CA or tls.get("caCertificates"):
        return None
    if tls.get("credentialName") and rule.spec.get("workloadSelector") is not None:
        return None
    return mode


@analyzer("destinationrule.CaCertificateAnalyzer", inputs=("DestinationRule",))
def ca_certificates(ctx: CheckContext) -> list[Finding]:
    """IST0128/IST0129 when SIMPLE or MUTUAL TLS has no caCertificates to verify the server."""
    findings: list[Finding] = []
    for rule in ctx.snapshot.of_kind("DestinationRule"):
        policy = mapping(rule.spec.get("trafficPolicy"))
        host = str(rule.spec.get("host") or "")
        args: dict[str, Any] = {"destination_rule": rule.qualified_name, "namespace": rule.namespace, "host": host}
        mode = _tls_without_ca(policy.get("tls"), rule)
        if mode:
            findings.append(report("IST0128", rule, mode=mode, **args))
        for setting in mappings(policy.get("portLevelSettings")):
            mode = _tls_without_ca(setting.get("tls"), rule)
            if mode:
                number = mapping(setting.get("port")).get("number")
                # istioctl prints the PortSelector message as protobuf text: "number:443".
                findings.append(report("IST0129", rule, mode=mode, port=f"number:{number}" if number else "",
                                       **args))
    return unique(findings)


@analyzer("destinationrule.UnknownHostAnalyzer", inputs=("DestinationRule", "Service", "ServiceEntry"))
def unknown_hosts(ctx: CheckContext) -> list[Finding]:
    """IST0174 when a DestinationRule's host is no Service or ServiceEntry host visible to it."""
    hosts = HostIndex.of(ctx.snapshot)
    findings: list[Finding] = []
    for rule in ctx.snapshot.of_kind("DestinationRule"):
        host = str(rule.spec.get("host") or "")
        if host and not hosts.exists(host, rule.namespace or "default", _export_to(rule)):
            findings.append(report("IST0174", rule, host=host))
    return findings


@analyzer("destinationrule.SubsetSelectPodAnalyzer", inputs=("DestinationRule", "Pod", "Service", "ServiceEntry"))
def subsets_without_pods(ctx: CheckContext) -> list[Finding]:
    """IST0173 when a subset's labels select no pod (nor WorkloadEntry or ServiceEntry endpoint)."""
    hosts = HostIndex.of(ctx.snapshot)
    selects = _SubsetMatcher(ctx.snapshot)
    findings: list[Finding] = []
    for rule in ctx.snapshot.of_kind("DestinationRule"):
        subsets = mappings(rule.spec.get("subsets"))
        if not subsets:
            continue
        lookup = hosts.lookup(str(rule.spec.get("host") or ""), rule.namespace or "default", _export_to(rule))
        if not lookup.entries:
            continue  # unknown host is IST0174; a wildcard host has no single workload to check
        for subset in subsets:
            labels = {str(k): str(v) for k, v in mapping(subset.get("labels")).items()}
            if not any(selects(entry, labels) for entry in lookup.entries):
                findings.append(report("IST0173", rule, subset=subset.get("name", "")))
    return unique(findings)


class _SubsetMatcher:
    """Whether a subset's labels pick any workload of a host; answers cached per selector."""

    def __init__(self, snapshot: Snapshot):
        self.pods = PodIndex.of(snapshot)
        self.workload_entries = snapshot.of_kind("WorkloadEntry")
        self.trust_workload_entries = snapshot.can_trust_absence("WorkloadEntry")
        self._pod_cache: dict[frozenset[tuple[str, str]], bool] = {}

    def __call__(self, entry: HostEntry, labels: Mapping[str, str]) -> bool:
        # Istio adds node-derived labels only with a non-empty value (pilot/pkg/serviceregistry/util/label
        # AugmentLabels), so a subset asking for an empty one selects no endpoint unless the pod sets it.
        labels = {k: v for k, v in labels.items() if k not in NODE_DERIVED_LABELS or v == ""}
        if entry.kind != "ServiceEntry":
            # istioctl matches a Service's subset labels against every pod, not only the service's own.
            return self._any_pod(labels)
        spec = entry.resource.spec
        workload_selector = dict(mapping(mapping(spec.get("workloadSelector")).get("labels")))
        endpoints = mappings(spec.get("endpoints"))
        if not workload_selector and not endpoints:
            return True  # DNS/static host without labelled endpoints: which endpoints a subset keeps is unclear
        if any(matches(labels, mapping(e.get("labels"))) for e in endpoints):
            return True
        selector = {**workload_selector, **labels}
        if self._any_pod(selector):
            return True
        if workload_selector and not self.trust_workload_entries:
            return True
        return any(matches(selector, {**we.labels, **mapping(we.spec.get("labels"))})
                   for we in self.workload_entries if we.namespace == entry.resource.namespace)

    def _any_pod(self, selector: Mapping[str, str]) -> bool:
        if not selector:
            return True
        key = frozenset(selector.items())
        if key not in self._pod_cache:
            self._pod_cache[key] = self.pods.any_match(selector)
        return self._pod_cache[key]


def _export_to(rule: Resource) -> list[str]:
    return [str(t) for t in rule.spec.get("exportTo") or ()]
