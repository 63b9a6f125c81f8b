"""Deployment analyzers: one workload behind Services that disagree, application containers running as UID 1337.

Mirrors istio/istio pkg/config/analysis/analyzers/deployment/services.go (ServiceAssociationAnalyzer)
and deployment/pod.go (ApplicationUIDAnalyzer).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

from commands.analyze import analyzer, report, unique
from commands.analyze.injection import INJECT_ANNOTATION
from commands.analyze.service import GATEWAY_MANAGED_LABEL, is_control_plane
from commands.checks.registry import CheckContext
from commands.cluster.injection import INJECTION_LABEL
from commands.cluster.selectors import matches
from commands.cluster.snapshot import Resource, Snapshot
from commands.codes import go_list
from commands.findings import Finding
from commands.shapes import mapping, mappings

# The sidecar runs as 1337 and iptables exempts that UID from redirection, so an application running
# as 1337 bypasses the sidecar (https://istio.io/latest/docs/ops/deployment/application-requirements/).
PROXY_UID = 1337
EXEMPT_CONTAINERS = frozenset({"istio-proxy", "istio-operator"})
WAYPOINT_MANAGED_VALUE = "istio.io-mesh-controller"


def pod_template(deployment: Resource) -> Mapping[str, Any]:
    return mapping(deployment.spec.get("template"))


def template_labels(deployment: Resource) -> dict[str, str]:
    return {str(k): str(v) for k, v in mapping(mapping(pod_template(deployment).get("metadata")).get("labels")).items()}


def deployment_in_mesh(deployment: Resource, snapshot: Snapshot) -> bool:
    """istio/istio pkg/config/analysis/analyzers/util/in_mesh.go DeploymentInMesh, for the pod template."""
    template = pod_template(deployment)
    metadata = mapping(template.get("metadata"))
    containers = mappings(mapping(template.get("spec")).get("containers"))
    if any(c.get("name") == "istio-proxy" and c.get("image") for c in containers):
        return True
    for source in (mapping(metadata.get("labels")), mapping(metadata.get("annotations"))):
        if INJECT_ANNOTATION in source:
            return str(source[INJECT_ANNOTATION]) == "true"
    namespace = snapshot.get("Namespace", None, deployment.namespace or "default")
    return namespace is not None and namespace.labels.get(INJECTION_LABEL) == "enabled"


def _services_for(deployment: Resource, services: list[Resource]) -> list[Resource]:
    """Services in the Deployment's namespace whose (non-empty) selector matches its pod template."""
    labels = template_labels(deployment)
    found: list[Resource] = []
    for service in services:
        selector = {str(k): str(v) for k, v in mapping(service.spec.get("selector")).items()}
        if service.namespace == deployment.namespace and selector and matches(selector, labels):
            found.append(service)
    return found


@analyzer("deployment.ServiceAssociationAnalyzer", inputs=("Deployment", "Service", "Namespace"))
def service_association(ctx: CheckContext) -> list[Finding]:
    """IST0116 when Services of one in-mesh Deployment use a port with different protocols (TCP/UDP);
    IST0137 when they send one targetPort different service ports."""
    services = ctx.snapshot.of_kind("Service")
    findings: list[Finding] = []
    for deployment in ctx.snapshot.of_kind("Deployment"):
        if deployment.labels.get(GATEWAY_MANAGED_LABEL) == WAYPOINT_MANAGED_VALUE:
            continue  # waypoints serve every port of their Services on purpose
        if not deployment_in_mesh(deployment, ctx.snapshot):
            continue
        matching = _services_for(deployment, services)
        findings.extend(_protocol_conflicts(deployment, matching))
        findings.extend(_target_port_conflicts(deployment, matching))
    return unique(findings)


def _protocol_conflicts(deployment: Resource, services: list[Resource]) -> Iterator[Finding]:
    by_port: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for service in services:
        for port in mappings(service.spec.get("ports")):
            if isinstance(port.get("port"), int):
                by_port[port["port"]][str(port.get("protocol") or "TCP")].append(service.qualified_name)
    for number in sorted(by_port):
        protocols = by_port[number]
        if len(protocols) > 1:
            names = sorted(name for names in protocols.values() for name in names)
            yield report("IST0116", deployment, deployment=deployment.name, port=number, services=go_list(names))


def _target_port_conflicts(deployment: Resource, services: list[Resource]) -> Iterator[Finding]:
    by_target: dict[str, dict[int, str]] = defaultdict(dict)
    for service in services:
        for port in mappings(service.spec.get("ports")):
            if not isinstance(port.get("port"), int):
                continue
            target = str(port.get("targetPort") or "")
            # The API server defaults targetPort to port.
            by_target[target if target not in ("", "0") else str(port["port"])][port["port"]] = service.qualified_name
    for target in sorted(by_target):
        ports = by_target[target]
        if len(ports) > 1:
            yield report("IST0137", deployment, deployment=deployment.name, services=go_list(sorted(ports.values())),
                         target_port=target, ports=go_list(sorted(ports)))


@analyzer("deployment.ApplicationUIDAnalyzer", inputs=("Pod", "Deployment"))
def application_uid(ctx: CheckContext) -> list[Finding]:
    """IST0144 for a Pod or Deployment whose pod or application container runs as UID 1337."""
    findings: list[Finding] = []
    for pod in ctx.snapshot.of_kind("Pod"):
        if _runs_as_proxy_uid(pod.spec) and not is_control_plane(pod):  # the rare case first: both are pure
            findings.append(report("IST0144", pod))
    for deployment in ctx.snapshot.of_kind("Deployment"):
        spec = mapping(pod_template(deployment).get("spec"))
        if not is_control_plane(deployment) and _runs_as_proxy_uid(spec):
            findings.append(report("IST0144", deployment))
    return findings


def _runs_as_proxy_uid(pod_spec: Mapping[str, Any]) -> bool:
    if mapping(pod_spec.get("securityContext")).get("runAsUser") == PROXY_UID:
        return True
    # A plain loop, not any() over a generator: this runs for every pod of the mesh.
    for container in mappings(pod_spec.get("containers")):
        if (container.get("name") not in EXEMPT_CONTAINERS
                and mapping(container.get("securityContext")).get("runAsUser") == PROXY_UID):
            return True
    return False
