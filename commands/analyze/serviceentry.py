"""ServiceEntry analyzers: TCP entries without addresses, one host:port declared with two protocols."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from commands.analyze import analyzer, report
from commands.analyze.hosts import EXPORT_TO_ALL, EXPORT_TO_OWN_NAMESPACE
from commands.checks.registry import CheckContext
from commands.cluster.snapshot import Resource
from commands.findings import Finding
from commands.shapes import mapping, mappings

# Proxy metadata that makes the sidecar's DNS proxy hand out virtual IPs, so a TCP ServiceEntry
# without addresses still gets a listener of its own (istio/istio pkg/config/analysis/analyzers/
# serviceentry/protocoladdresses.go; https://istio.io/latest/docs/ops/configuration/traffic-management/dns-proxy/).
DNS_CAPTURE = "ISTIO_META_DNS_CAPTURE"
AUTO_ALLOCATE_FLAGS = ("ISTIO_META_DNS_AUTO_ALLOCATE", "PILOT_ENABLE_IP_AUTOALLOCATE")


def dns_auto_allocation(mesh_config: Mapping[str, Any]) -> bool:
    metadata = mapping(mapping(mesh_config.get("defaultConfig")).get("proxyMetadata"))
    if str(metadata.get(DNS_CAPTURE)) != "true":
        return False
    return any(str(metadata.get(flag)) == "true" for flag in AUTO_ALLOCATE_FLAGS)


def _has_addresses(entry: Resource) -> bool:
    """``spec.addresses``, or addresses istiod allocated and wrote to ``status.addresses``."""
    return bool(entry.spec.get("addresses")) or bool(entry.status.get("addresses"))


def _is_tcp(port: Mapping[str, Any]) -> bool:
    protocol = str(port.get("protocol") or "")
    return not protocol or protocol.upper() == "TCP"


@analyzer("serviceentry.ProtocolAddressesAnalyzer", inputs=("ServiceEntry",))
def protocol_addresses(ctx: CheckContext) -> list[Finding]:
    """IST0134 for a ServiceEntry with a TCP (or unset) port and no addresses.

    Without an address the TCP port gets a 0.0.0.0:<port> listener shared by every such entry,
    so traffic for one host can go to another (the ServiceEntry reference's ``addresses`` docs).
    """
    if dns_auto_allocation(ctx.snapshot.mesh_config):
        return []
    return [report("IST0134", entry) for entry in ctx.snapshot.of_kind("ServiceEntry")
            if not _has_addresses(entry) and any(_is_tcp(p) for p in mappings(entry.spec.get("ports")))]


def export_scopes(entry: Resource) -> set[str]:
    """``*`` when visible everywhere, else the namespaces it is exported to."""
    export_to = [str(t) for t in entry.spec.get("exportTo") or ()]
    if not export_to or EXPORT_TO_ALL in export_to:
        return {EXPORT_TO_ALL}
    own = entry.namespace or "default"
    return {own if t == EXPORT_TO_OWN_NAMESPACE else t for t in export_to}


@analyzer("serviceentry.ConflictingServiceEntryProtocolAnalyzer", inputs=("ServiceEntry",))
def conflicting_protocols(ctx: CheckContext) -> list[Finding]:
    """IST0177 when ServiceEntries visible in the same namespace give one host:port different protocols.

    istio/istio pkg/config/analysis/analyzers/serviceentry/conflictingserviceentries.go: only one
    protocol can win for the listener, so the other entry's traffic is proxied as the wrong protocol.
    """
    index: dict[tuple[str, str, int], list[tuple[str, Resource]]] = defaultdict(list)
    for entry in ctx.snapshot.of_kind("ServiceEntry"):
        for scope in export_scopes(entry):
            for host in entry.spec.get("hosts") or ():
                for port in mappings(entry.spec.get("ports")):
                    if isinstance(port.get("number"), int):
                        index[(scope, str(host), port["number"])].append(
                            (str(port.get("protocol") or "").upper(), entry))
    findings: list[Finding] = []
    reported: set[str] = set()
    for (scope, host, number) in sorted(index):
        claims = list(index[(scope, host, number)])
        if scope != EXPORT_TO_ALL:
            claims += index.get((EXPORT_TO_ALL, host, number), [])
        protocols = sorted({protocol for protocol, _ in claims})
        if len(protocols) < 2:
            continue
        entries = {entry.qualified_name: entry for _, entry in claims}
        names = ", ".join(sorted(entries))
        for name in sorted(entries):
            if name not in reported:
                reported.add(name)
                findings.append(report("IST0177", entries[name], service_entries=names, host=host, port=number,
                                       protocols=", ".join(protocols)))
    return findings
