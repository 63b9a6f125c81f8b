"""Service analyzers: port names Istio cannot read a protocol from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from commands.analyze import analyzer, report
from commands.analyze.injection import SYSTEM_NAMESPACES
from commands.checks.registry import CheckContext
from commands.cluster.snapshot import Resource
from commands.findings import Finding
from commands.shapes import mappings

# Istio's protocol.Parse: the part of a port name (or appProtocol) before the first "-".
PROTOCOL_PREFIXES = frozenset({
    "tcp", "udp", "grpc", "http", "http_proxy", "http2", "https", "tls", "mongo", "redis", "mysql",
})
GRPC_WEB = "grpc-web"
# appProtocol values Kubernetes defines; Istio maps them to HTTP2, HTTP and HTTPS.
KUBERNETES_APP_PROTOCOLS = frozenset({"kubernetes.io/h2c", "kubernetes.io/ws", "kubernetes.io/wss"})
# SMTP, DNS, MySQL, MongoDB: Istio treats them as TCP whatever their name, and never sniffs them.
WELL_KNOWN_TCP_PORTS = frozenset({25, 53, 3306, 27017})


def declares_protocol(port: Mapping[str, Any]) -> bool:
    """Whether Istio knows the port's protocol without sniffing (its ``ConvertProtocol`` rules)."""
    if port.get("protocol") == "UDP":
        return True
    app_protocol = port.get("appProtocol")
    # A set appProtocol wins over the name, even when the name alone would be fine.
    name = str(app_protocol) if app_protocol is not None else str(port.get("name") or "")
    if app_protocol is not None and name in KUBERNETES_APP_PROTOCOLS:
        return True
    if name[:len(GRPC_WEB)].lower() == GRPC_WEB:
        return True
    if name.split("-", 1)[0].lower() in PROTOCOL_PREFIXES:
        return True
    return port.get("port") in WELL_KNOWN_TCP_PORTS


# Services Istio creates for Gateway API gateways and waypoints (istio/istio pkg/config/constants:
# ManagedGateway*ControllerLabel); the PortNameAnalyzer skips them as "not created by users".
GATEWAY_MANAGED_LABEL = "gateway.istio.io/managed"
GATEWAY_MANAGED_VALUES = frozenset({"istio.io-gateway-controller", "istio.io-mesh-controller",
                                    "istio.io-eastwest-controller"})


def is_control_plane(service: Resource) -> bool:
    return "istio" in service.labels or service.labels.get("release") == "istio"


def is_gateway_managed(service: Resource) -> bool:
    """A waypoint or Gateway API gateway Service that Istio generated (its port names are Istio's own)."""
    return service.labels.get(GATEWAY_MANAGED_LABEL) in GATEWAY_MANAGED_VALUES


@analyzer("service.PortNameAnalyzer", inputs=("Service",))
def port_names(ctx: CheckContext) -> list[Finding]:
    """IST0118 for each Service port whose name (or appProtocol) names no protocol Istio knows."""
    findings: list[Finding] = []
    for service in ctx.snapshot.of_kind("Service"):
        # ExternalName services get IST0150 from istioctl instead; meshbot does not report it.
        if service.namespace in SYSTEM_NAMESPACES or is_control_plane(service) or is_gateway_managed(service) \
                or service.spec.get("type") == "ExternalName":
            continue
        for port in mappings(service.spec.get("ports")):
            if not declares_protocol(port):
                findings.append(report("IST0118", service, port_name=port.get("name") or "", port=port.get("port"),
                                       target_port=_target_port(port)))
    return findings


def _target_port(port: Mapping[str, Any]) -> str:
    # The API server defaults targetPort to port; istioctl on a file without it would print 0.
    target = port.get("targetPort")
    return str(port.get("port") if target is None else target)
