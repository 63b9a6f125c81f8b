"""ExternalName Services whose port names give Istio no protocol (IST0150).

For an ExternalName Service istiod builds a DNS cluster from the port name's protocol; an
unnamed, unknown or ``tcp``-named port makes the sidecar treat the traffic as opaque TCP it may
not forward to the external host.  istio/istio pkg/config/analysis/analyzers/service/portname.go
reports these in its PortNameAnalyzer instead of IST0118; meshbot's PortNameAnalyzer
(commands/analyze/service.py) skips ExternalName Services, so this analyzer runs beside it.
"""

from __future__ import annotations

from commands.analyze import analyzer, report
from commands.analyze.injection import SYSTEM_NAMESPACES
from commands.analyze.service import declares_protocol, is_control_plane, is_gateway_managed
from commands.checks.registry import CheckContext
from commands.findings import Finding
from commands.shapes import mappings


@analyzer("service.ExternalNamePortNameAnalyzer", inputs=("Service",))
def external_name_ports(ctx: CheckContext) -> list[Finding]:
    """IST0150 for each port of an ExternalName Service with no protocol Istio knows, or named ``tcp``."""
    findings: list[Finding] = []
    for service in ctx.snapshot.of_kind("Service"):
        if service.spec.get("type") != "ExternalName" or service.namespace in SYSTEM_NAMESPACES \
                or is_control_plane(service) or is_gateway_managed(service):
            continue
        for port in mappings(service.spec.get("ports")):
            if not declares_protocol(port) or port.get("name") == "tcp":
                findings.append(report("IST0150", service, evidence={"port": dict(port)}))
    return findings
