"""VirtualService analyzers: destination hosts, subsets, gateways, mesh host conflicts (istioctl analyze)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from commands.analyze import analyzer, report, unique
from commands.analyze.gateway import is_kubernetes_gateway
from commands.analyze.hosts import (
    EXPORT_TO_ALL,
    EXPORT_TO_OWN_NAMESPACE,
    HostIndex,
    host_matches,
    is_wildcard,
    split_namespaced_host,
    to_fqdn,
    wildcard_suffixes,
)
from commands.checks.registry import CheckContext
from commands.cluster.snapshot import Resource, Snapshot
from commands.codes import go_list
from commands.findings import Finding
from commands.shapes import mapping, mappings

MESH_GATEWAY = "mesh"


@dataclass(frozen=True)
class RouteDestination:
    """One ``destination`` of a VirtualService route or mirror."""

    rule: str
    """``http``, ``tcp``, ``tls``, ``http.mirror`` or ``http.mirrors``."""
    destination: Mapping[str, Any]

    @property
    def is_mirror(self) -> bool:
        return self.rule.startswith("http.mirror")

    @property
    def host(self) -> str:
        return str(self.destination.get("host") or "")

    @property
    def subset(self) -> str:
        return str(self.destination.get("subset") or "")

    @property
    def port(self) -> int | None:
        number = mapping(self.destination.get("port")).get("number")
        return number if isinstance(number, int) and number else None



def route_destinations(vs: Resource) -> list[RouteDestination]:
    """Route destinations in istioctl's order (tcp, tls, http), then http mirrors.

    A route entry without a destination is kept (with an empty host): istioctl reports it as a
    host that is not found, and Envoy has nowhere to send that share of the traffic.
    """
    out: list[RouteDestination] = []
    for rule in ("tcp", "tls", "http"):
        for route_rule in mappings(vs.spec.get(rule)):
            for route in mappings(route_rule.get("route")):
                out.append(RouteDestination(rule, mapping(route.get("destination"))))
    for route_rule in mappings(vs.spec.get("http")):
        if isinstance(route_rule.get("mirror"), Mapping):
            out.append(RouteDestination("http.mirror", route_rule["mirror"]))
        for mirror in mappings(route_rule.get("mirrors")):
            out.append(RouteDestination("http.mirrors", mapping(mirror.get("destination"))))
    return [d for d in out if d.host or not d.is_mirror]


def vs_hosts(vs: Resource) -> list[str]:
    return [str(h) for h in vs.spec.get("hosts") or ()]


def vs_export_to(vs: Resource) -> list[str]:
    return [str(t) for t in vs.spec.get("exportTo") or ()]


def attached_to_mesh(vs: Resource) -> bool:
    """No ``gateways`` means the ``mesh`` gateway."""
    gateways = vs.spec.get("gateways") or []
    return not gateways or MESH_GATEWAY in gateways


def resolve_gateway(reference: str, namespace: str) -> tuple[str, str]:
    """(namespace, name) of a VirtualService's gateway reference, the way Istio resolves it.

    ``name`` and ``./name`` are in the VirtualService's namespace, ``ns/name`` is explicit,
    and the legacy ``name.ns.svc.cluster.local`` form names its namespace after the first dot.
    """
    if "/" in reference:
        gateway_namespace, _, name = reference.partition("/")
        return (namespace if gateway_namespace == EXPORT_TO_OWN_NAMESPACE else gateway_namespace), name
    if "." in reference:
        name, _, rest = reference.partition(".")
        return rest.split(".", 1)[0], name
    return namespace, reference



# --- destination hosts and ports -------------------------------------------------------------

@analyzer("virtualservice.DestinationHostAnalyzer", inputs=("VirtualService", "Service", "ServiceEntry"))
def destination_hosts(ctx: CheckContext) -> list[Finding]:
    """IST0101 for unknown destination hosts and ports, IST0112 when a multi-port service needs a port."""
    hosts = HostIndex.of(ctx.snapshot)
    findings: list[Finding] = []
    for vs in ctx.snapshot.of_kind("VirtualService"):
        for destination in route_destinations(vs):
            finding = _check_destination(vs, destination, hosts)
            if finding:
                findings.append(finding)
    return unique(findings)


def _check_destination(vs: Resource, destination: RouteDestination, hosts: HostIndex) -> Finding | None:
    lookup = hosts.lookup(destination.host, vs.namespace or "default", vs_export_to(vs))
    if not lookup.found:
        return report("IST0101", vs, reftype="mirror host" if destination.is_mirror else "host",
                      refval=destination.host)
    if not lookup.entries:
        return None
    port_sets = lookup.port_sets
    if destination.port is None:
        # A destination without a port is only ambiguous when every matching service has several ports.
        if all(len(ports) > 1 for ports in port_sets):
            return report("IST0112", vs, host=destination.host, ports=go_list(port_sets[0]),
                          evidence={"rule": destination.rule})
        return None
    if not any(destination.port in ports for ports in port_sets):
        return report("IST0101", vs, reftype="host:port", refval=f"{destination.host}:{destination.port}")
    return None


# --- subsets ---------------------------------------------------------------------------------

@dataclass
class SubsetIndex:
    """Subset names DestinationRules define, by host FQDN; wildcard hosts by suffix."""

    exact: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    wildcards: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    @classmethod
    def of(cls, snapshot: Snapshot) -> SubsetIndex:
        """One index per snapshot, built on first use."""
        cached = getattr(snapshot, "_subset_index", None)
        if cached is None:
            cached = cls()
            for rule in snapshot.of_kind("DestinationRule"):
                cached.add(rule)
            snapshot._subset_index = cached  # type: ignore[attr-defined]
        return cached

    def add(self, rule: Resource) -> None:
        names = {str(s["name"]) for s in mappings(rule.spec.get("subsets")) if s.get("name")}
        if not names:
            return
        host = to_fqdn(str(rule.spec.get("host") or ""), rule.namespace or "default")
        target = self.wildcards[host[1:]] if is_wildcard(host) else self.exact[host]
        target.update(names)

    def defines(self, host: str, subset: str) -> bool:
        # istioctl keys non-cluster hosts by the rule's namespace too; any DestinationRule for the host
        # may define the subset (rules in the client, service or root namespace all apply), so we do not.
        if subset in self.exact.get(host, ()):
            return True
        return any(subset in self.wildcards.get(suffix, ()) for suffix in wildcard_suffixes(host))


@analyzer("virtualservice.DestinationRuleAnalyzer", inputs=("VirtualService", "DestinationRule"))
def destination_subsets(ctx: CheckContext) -> list[Finding]:
    """IST0101 when a route names a subset no DestinationRule for its host defines."""
    subsets = SubsetIndex.of(ctx.snapshot)
    findings: list[Finding] = []
    for vs in ctx.snapshot.of_kind("VirtualService"):
        for destination in route_destinations(vs):
            if not destination.subset:
                continue
            if subsets.defines(to_fqdn(destination.host, vs.namespace or "default"), destination.subset):
                continue
            kind = "mirror" if destination.is_mirror else "host"
            findings.append(report("IST0101", vs, reftype=f"{kind}+subset in destinationrule",
                                   refval=f"{destination.host}+{destination.subset}"))
    return unique(findings)


# --- gateways --------------------------------------------------------------------------------

def gateway_hosts(gateway: Resource) -> list[str]:
    """Server hosts with ``./host`` made ``<gateway ns>/host`` and ``*/host`` made ``host``."""
    hosts: list[str] = []
    for server in mappings(gateway.spec.get("servers")):
        for host in server.get("hosts") or ():
            namespace, name = split_namespaced_host(str(host))
            if namespace == EXPORT_TO_OWN_NAMESPACE:
                hosts.append(f"{gateway.namespace}/{name}")
            elif namespace == EXPORT_TO_ALL:
                hosts.append(name)
            else:
                hosts.append(str(host))
    return hosts


def hosts_for_namespace(hosts: Iterable[str], namespace: str) -> list[str]:
    """Gateway hosts a VirtualService in ``namespace`` may bind to, without their namespace part."""
    out: list[str] = []
    for host in hosts:
        host_namespace, name = split_namespaced_host(host)
        if host_namespace in (None, namespace, EXPORT_TO_ALL):
            out.append(name)
    return out


# istio/istio pkg/config/gateway/kube/gatewayapi.go IsInternalGatewayReference: the Istio Gateway that
# istiod generates for a Gateway API listener is named ``<gateway>~istio-autogenerated-k8s-gateway~<listener>``.
INTERNAL_GATEWAY_MARKER = "~istio-autogenerated-k8s-gateway~"


def is_internal_gateway_reference(reference: str) -> bool:
    return INTERNAL_GATEWAY_MARKER in reference.rpartition("/")[2]


def kubernetes_gateway_hosts(gateway: Resource) -> list[str] | None:
    """Listener hostnames; None when a listener has none (it accepts every host)."""
    hosts: list[str] = []
    for listener in mappings(gateway.spec.get("listeners")):
        hostname = str(listener.get("hostname") or "")
        if not hostname:
            return None
        hosts.append(hostname)
    return hosts


@analyzer("virtualservice.GatewayAnalyzer", inputs=("VirtualService", "Gateway"))
def gateways(ctx: CheckContext) -> list[Finding]:
    """IST0101 for a missing gateway, IST0132 when none of the VirtualService's hosts is served by it,
    IST0165 for a reference to a gateway istiod generates from a Gateway API Gateway.

    Follows istio/istio pkg/config/analysis/analyzers/virtualservice/gateways.go: a Gateway API
    Gateway is a valid reference whose listener hostnames (none = any host) must match a VS host.
    """
    served_by_gateway: dict[tuple[str, str, str], list[str] | None] = {}
    findings: list[Finding] = []
    for vs in ctx.snapshot.of_kind("VirtualService"):
        namespace = vs.namespace or "default"
        for reference in vs.spec.get("gateways") or ():
            reference = str(reference)
            if reference == MESH_GATEWAY:
                continue
            if is_internal_gateway_reference(reference):
                # Istio reports only this: the generated gateway is not a resource anyone can read.
                findings.append(report("IST0165", vs, virtual_service=vs.qualified_name, gateway=reference))
                continue
            key = resolve_gateway(reference, namespace)
            gateway = ctx.snapshot.get("Gateway", *key)
            if gateway is None:
                findings.append(report("IST0101", vs, reftype="gateway", refval=reference))
            if (*key, namespace) not in served_by_gateway:
                served_by_gateway[(*key, namespace)] = _served_hosts(gateway, namespace)
            # Like istioctl, a missing gateway also serves none of the hosts (IST0132 as well).
            served = served_by_gateway[(*key, namespace)]
            if served is not None and not _any_host_served(vs, served):
                findings.append(report("IST0132", vs, hosts=go_list(vs_hosts(vs)), virtual_service=vs.qualified_name,
                                       gateway=f"{key[0]}/{key[1]}"))
    return unique(findings)


def _served_hosts(gateway: Resource | None, namespace: str) -> list[str] | None:
    """Hosts a gateway serves to VirtualServices in ``namespace``; None when it serves any host."""
    if gateway is None:
        return []
    if is_kubernetes_gateway(gateway):
        return kubernetes_gateway_hosts(gateway)
    return hosts_for_namespace(gateway_hosts(gateway), namespace)


def _any_host_served(vs: Resource, served: list[str]) -> bool:
    namespace = vs.namespace or "default"
    # Short VirtualService hosts also count in their FQDN form, which is how Istio binds them.
    candidates = {h for host in vs_hosts(vs) for h in (host, to_fqdn(host, namespace))}
    return any(host_matches(g, h) for g in served for h in candidates)


# --- hosts shared on the mesh gateway --------------------------------------------------------

def mesh_host_scopes(vs: Resource) -> list[str]:
    """``*`` when exported everywhere, otherwise each namespace the VirtualService is exported to."""
    export_to = vs_export_to(vs)
    if not export_to or EXPORT_TO_ALL in export_to:
        return [EXPORT_TO_ALL]
    namespace = vs.namespace or "default"
    return sorted({namespace if t == EXPORT_TO_OWN_NAMESPACE else t for t in export_to})


def _scoped_mesh_hosts(vs: Resource) -> Iterator[str]:
    namespace = vs.namespace or "default"
    for scope in mesh_host_scopes(vs):
        for host in vs_hosts(vs):
            yield f"{scope}/{to_fqdn(host, namespace)}"


@analyzer("virtualservice.ConflictingMeshGatewayHostsAnalyzer", inputs=("VirtualService",))
def conflicting_mesh_hosts(ctx: CheckContext) -> list[Finding]:
    """IST0109 when several mesh-gateway VirtualServices define the same host for the same namespaces.

    As in istio/istio pkg/config/analysis/analyzers/virtualservice/conflictingmeshgatewayhosts.go, a
    host exported to some namespaces also conflicts with a matching host exported to all of them
    (``*``), and each VirtualService is reported once.
    """
    by_host: dict[str, dict[str, Resource]] = defaultdict(dict)
    for vs in ctx.snapshot.of_kind("VirtualService"):
        if not attached_to_mesh(vs):
            continue
        for scoped_host in _scoped_mesh_hosts(vs):
            by_host[scoped_host][vs.qualified_name] = vs
    everywhere = {host.partition("/")[2]: services for host, services in by_host.items()
                  if host.startswith(f"{EXPORT_TO_ALL}/")}
    findings: list[Finding] = []
    reported: set[str] = set()
    for scoped_host in sorted(by_host):
        scope, _, host = scoped_host.partition("/")
        services = dict(by_host[scoped_host])
        if scope != EXPORT_TO_ALL:
            for other_host, others in everywhere.items():
                if host_matches(host, other_host):
                    services.update(others)
        if len(services) < 2:
            continue
        names = ",".join(sorted(services))
        for name in sorted(services):
            if name not in reported:
                reported.add(name)
                findings.append(report("IST0109", services[name], virtual_services=names, host=scoped_host))
    return findings
