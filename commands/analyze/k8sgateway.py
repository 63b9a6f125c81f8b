"""Workload selectors on policies that select a Gateway API gateway's pods (IST0166)."""

from __future__ import annotations

from collections.abc import Mapping

from commands.analyze import analyzer, report
from commands.checks.registry import CheckContext
from commands.findings import Finding
from commands.shapes import mapping

# istio/istio pkg/config/analysis/analyzers/k8sgateway/workloadselector.go: the kinds it checks.
SELECTOR_POLICY_KINDS = ("AuthorizationPolicy", "RequestAuthentication", "Telemetry", "WasmPlugin")
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"


@analyzer("k8sgateway.SelectorAnalyzer", inputs=("Pod", "AuthorizationPolicy", "RequestAuthentication", "Telemetry"))
def gateway_selectors(ctx: CheckContext) -> list[Finding]:
    """IST0166 for a selector-only policy whose labels match a Gateway API gateway pod in its namespace.

    istiod itself still applies such a policy unless ENABLE_SELECTOR_BASED_K8S_GATEWAY_POLICY is
    false (pilot/pkg/features/pilot.go; pilot/pkg/model/policyattachment.go), and waypoints never
    do; istioctl warns either way because targetRef is the supported attachment.
    """
    gateway_pods: dict[str, list[Mapping[str, str]]] = {}
    for pod in ctx.snapshot.of_kind("Pod"):
        if GATEWAY_NAME_LABEL in pod.labels:
            gateway_pods.setdefault(pod.namespace or "", []).append(pod.labels)
    findings: list[Finding] = []
    for kind in SELECTOR_POLICY_KINDS:
        for policy in ctx.snapshot.of_kind(kind):
            selector = policy.spec.get("selector")
            if policy.spec.get("targetRef") or policy.spec.get("targetRefs") or selector is None:
                continue
            wanted = {str(k): str(v) for k, v in mapping(mapping(selector).get("matchLabels")).items()}
            for labels in gateway_pods.get(policy.namespace or "", []):
                if all(labels.get(k) == v for k, v in wanted.items()):
                    findings.append(report("IST0166", policy, gateway=labels[GATEWAY_NAME_LABEL]))
    return findings
