"""Status conditions istiod (and Gateway API controllers) set to say a resource is not in effect (IST0171).

istio/istio pkg/config/analysis/analyzers/conditions/conditions.go: per kind, only the condition
types listed below count, and only with status "False"; an AuthorizationPolicy's WaypointAccepted
with reason PartiallyInvalid is reported although its status is "True" (part of the policy is
dropped).  A ZtunnelAccepted=False AuthorizationPolicy is not enforced by ztunnel at all; a
WaypointBound=False Service gets no waypoint policy; a route or Gateway not Accepted/Programmed
carries no traffic — these are outages, not cosmetics.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from commands.analyze import analyzer, report
from commands.analyze.gateway import is_kubernetes_gateway
from commands.checks.registry import CheckContext
from commands.cluster.snapshot import Resource
from commands.findings import Finding
from commands.shapes import mappings

WAYPOINT_BOUND = {"istio.io/WaypointBound"}
GATEWAY_API = {"Accepted", "Programmed", "ResolvedRefs"}
NEGATIVE_CONDITIONS: dict[str, set[str]] = {
    "Service": WAYPOINT_BOUND,
    "ServiceEntry": WAYPOINT_BOUND,
    "WorkloadEntry": WAYPOINT_BOUND,
    "AuthorizationPolicy": {"ZtunnelAccepted", "WaypointAccepted"},
    "Gateway": GATEWAY_API,  # Gateway API Gateways only (gvk.KubernetesGateway)
    "HTTPRoute": GATEWAY_API,
    "GRPCRoute": GATEWAY_API,
}
# Route status lists conditions per parent (gateway or waypoint) the route attaches to.
ROUTE_KINDS = frozenset({"HTTPRoute", "GRPCRoute"})


def conditions(resource: Resource) -> Iterator[Mapping[str, Any]]:
    if resource.kind in ROUTE_KINDS:
        for parent in mappings(resource.status.get("parents")):
            yield from mappings(parent.get("conditions"))
        return
    yield from mappings(resource.status.get("conditions"))


def is_negative(resource: Resource, condition: Mapping[str, Any]) -> bool:
    kind_types = NEGATIVE_CONDITIONS.get(resource.kind, set())
    kind, status, reason = str(condition.get("type")), str(condition.get("status")), condition.get("reason")
    if kind in kind_types and status == "False":
        return True
    return resource.kind == "AuthorizationPolicy" and kind == "WaypointAccepted" and reason == "PartiallyInvalid"


@analyzer("conditions.ConditionAnalyzer",
          inputs=("Service", "ServiceEntry", "WorkloadEntry", "AuthorizationPolicy", "Gateway"))
def negative_conditions(ctx: CheckContext) -> list[Finding]:
    """IST0171 for each negative condition on the kinds Istio's ConditionAnalyzer reads."""
    findings: list[Finding] = []
    for kind in NEGATIVE_CONDITIONS:
        for resource in ctx.snapshot.of_kind(kind):
            if kind == "Gateway" and not is_kubernetes_gateway(resource):
                continue
            for condition in conditions(resource):
                if is_negative(resource, condition):
                    findings.append(report(
                        "IST0171", resource, condition_type=condition.get("type"),
                        reason=condition.get("reason") or "", condition_message=condition.get("message") or "",
                        evidence={"condition": dict(condition)}))
    return findings
