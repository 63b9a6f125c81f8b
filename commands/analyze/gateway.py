"""Gateway analyzers: workload selectors, TLS credentials, service ports, conflicting servers."""

from __future__ import annotations

import base64
import binascii
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from cryptography import x509

from commands.analyze import analyzer, report, unique
from commands.certificates.gateway_credentials import credential_refs
from commands.checks.registry import CheckContext
from commands.cluster.selectors import PodIndex, format_selector, matches
from commands.cluster.snapshot import Resource, Snapshot
from commands.findings import Finding
from commands.shapes import mapping, mappings

Selector = frozenset[tuple[str, str]]

_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)


# Gateway API Gateways share the kind name with Istio's; the API group tells them apart.  Istio's
# gateway analyzers read only networking.istio.io Gateways (gvk.Gateway).
KUBERNETES_GATEWAY_GROUP = "gateway.networking.k8s.io"


def is_kubernetes_gateway(resource: Resource) -> bool:
    return resource.api_version.split("/", 1)[0] == KUBERNETES_GATEWAY_GROUP


def istio_gateways(snapshot: Snapshot) -> list[Resource]:
    return [g for g in snapshot.of_kind("Gateway") if not is_kubernetes_gateway(g)]


def gateway_selector(gateway: Resource) -> dict[str, str]:
    return {str(k): str(v) for k, v in mapping(gateway.spec.get("selector")).items()}


def gateway_servers(gateway: Resource) -> list[Mapping[str, Any]]:
    return mappings(gateway.spec.get("servers"))


def server_port(server: Mapping[str, Any]) -> int | None:
    number = mapping(server.get("port")).get("number")
    return number if isinstance(number, int) else None


class _GatewayWorkloads:
    """Which pods a gateway selector picks, cached per distinct selector."""

    def __init__(self, snapshot: Snapshot):
        self.pods = PodIndex.of(snapshot)
        self._cache: dict[Selector, list[Resource]] = {}

    def pods_for(self, selector: Mapping[str, str]) -> list[Resource]:
        key = frozenset(selector.items())
        if key not in self._cache:
            self._cache[key] = self.pods.select(selector)
        return self._cache[key]

    def has_pods(self, gateway: Resource) -> bool:
        """An empty selector selects every pod, as istioctl reads it."""
        return bool(self.pods_for(gateway_selector(gateway)))


# --- selector ---------------------------------------------------------------------------------

@analyzer("gateway.SelectorAnalyzer", inputs=("Gateway", "Pod"))
def selectors(ctx: CheckContext) -> list[Finding]:
    """IST0101 when no pod matches a Gateway's workload selector."""
    workloads = _GatewayWorkloads(ctx.snapshot)
    return [report("IST0101", gateway, reftype="selector", refval=format_selector(gateway_selector(gateway)))
            for gateway in istio_gateways(ctx.snapshot) if not workloads.has_pods(gateway)]


# --- credentials ------------------------------------------------------------------------------

@analyzer("gateway.SecretAnalyzer", inputs=("Gateway", "Pod", "Secret"))
def secrets(ctx: CheckContext) -> list[Finding]:
    """IST0101 for a credentialName Secret missing from the gateway workload's namespace, IST0161 if unusable."""
    workloads = _GatewayWorkloads(ctx.snapshot)
    findings: list[Finding] = []
    for ref in credential_refs(ctx.snapshot):
        if not workloads.has_pods(ref.gateway) or "://" in ref.credential_name:
            continue  # no workload: the selector finding says so; URL-style names are not Secrets here
        namespace, name = ref.secret_namespace, ref.credential_name
        if "/" in name:
            namespace, _, name = name.partition("/")
        secret = ctx.snapshot.get("Secret", namespace, name)
        if secret is None:
            findings.append(report("IST0101", ref.gateway, reftype="credentialName", refval=ref.credential_name,
                                   evidence={"secret_namespace": namespace}))
            continue
        problem = credential_problem(secret, ctx.now)
        if problem:
            findings.append(report("IST0161", ref.gateway, gateway=ref.gateway.name, namespace=namespace,
                                   evidence={"secret": f"{namespace}/{name}", "problem": problem}))
    return unique(findings)


def credential_problem(secret: Resource, now: datetime) -> str | None:
    """Why Istio could not serve this Secret's certificate, or None when it can.

    Istio also requires the private key (``key``/``tls.key``); meshbot never reads keys,
    so only the certificate is judged.
    """
    data = _secret_data(secret)
    cert = data.get("cert") or data.get("tls.crt")
    if not cert:
        return "no certificate under cert or tls.crt"
    block = _PEM_BLOCK.search(cert.decode("utf-8", "replace"))
    if block is None:
        return "certificate is not PEM"
    try:
        certificate = x509.load_der_x509_certificate(base64.b64decode("".join(block.group(2).split())))
    except (ValueError, binascii.Error):
        return "certificate cannot be parsed as X.509"
    if now < certificate.not_valid_before_utc:
        return f"certificate is not valid before {certificate.not_valid_before_utc.isoformat()}"
    if now > certificate.not_valid_after_utc:
        return f"certificate expired at {certificate.not_valid_after_utc.isoformat()}"
    return None


def _secret_data(secret: Resource) -> dict[str, bytes]:
    """Secret values as bytes: ``data`` is base64, ``stringData`` is plain (and wins, as in the API server)."""
    out: dict[str, bytes] = {}
    for key, value in mapping(secret.body.get("data")).items():
        try:
            out[str(key)] = base64.b64decode(str(value), validate=True)
        except (ValueError, binascii.Error):
            out[str(key)] = b""
    for key, value in mapping(secret.body.get("stringData")).items():
        out[str(key)] = str(value).encode()
    return out


# --- ports on the gateway Service -------------------------------------------------------------

@analyzer("gateway.IngressGatewayPortAnalyzer", inputs=("Gateway", "Pod", "Service"))
def service_ports(ctx: CheckContext) -> list[Finding]:
    """IST0162 when a Gateway server port is no target port of a Service in front of its pods."""
    workloads = _GatewayWorkloads(ctx.snapshot)
    ports = _WorkloadServicePorts(ctx.snapshot)
    findings: list[Finding] = []
    for gateway in istio_gateways(ctx.snapshot):
        selector = gateway_selector(gateway)
        pods = workloads.pods_for(selector)
        if not pods:
            continue
        exposed = ports.for_pods(pods)
        for server in gateway_servers(gateway):
            port = server_port(server)
            if port is not None and port not in exposed:
                findings.append(report("IST0162", gateway, port=port, selector=format_selector(selector)))
    return unique(findings)


class _WorkloadServicePorts:
    """Target ports of the TCP Services that select a pod, cached per (namespace, labels)."""

    def __init__(self, snapshot: Snapshot):
        self.services_by_namespace: dict[str, list[Resource]] = defaultdict(list)
        for service in snapshot.of_kind("Service"):
            self.services_by_namespace[service.namespace or "default"].append(service)
        self._cache: dict[tuple[str, Selector], frozenset[int]] = {}

    def for_pods(self, pods: Iterable[Resource]) -> set[int]:
        exposed: set[int] = set()
        for pod in pods:
            key = (pod.namespace or "default", frozenset((str(k), str(v)) for k, v in pod.labels.items()))
            if key not in self._cache:
                self._cache[key] = frozenset(self._ports_for(pod))
            exposed |= self._cache[key]
        return exposed

    def _ports_for(self, pod: Resource) -> set[int]:
        ports: set[int] = set()
        for service in self.services_by_namespace.get(pod.namespace or "default", ()):
            # Like istioctl, a Service without a selector counts as selecting every pod in its namespace.
            if not matches(mapping(service.spec.get("selector")), pod.labels):
                continue
            for port in mappings(service.spec.get("ports")):
                if str(port.get("protocol") or "TCP") == "TCP":
                    ports.update(_target_ports(port, pod))
        return ports


def _target_ports(port: Mapping[str, Any], pod: Resource) -> set[int]:
    """Gateway server ports this Service port serves: its own number and the pod port it targets.

    istioctl has compared servers with the service port in some releases and the target port in
    others; Istio translates a server port that equals the service port to its target port, so
    both are accepted.  A named targetPort resolves through the pod's container ports.
    """
    found = {port["port"]} if isinstance(port.get("port"), int) else set()
    target = port.get("targetPort")
    if isinstance(target, int) and target:
        found.add(target)
    elif isinstance(target, str) and target.isdigit():
        found.add(int(target))
    elif isinstance(target, str) and target:
        found.update(_container_port(pod, target))
    return found


def _container_port(pod: Resource, name: str) -> set[int]:
    return {p["containerPort"] for c in mappings(pod.spec.get("containers")) for p in mappings(c.get("ports"))
            if p.get("name") == name and isinstance(p.get("containerPort"), int)}


# --- conflicting servers ----------------------------------------------------------------------

@analyzer("gateway.ConflictingGatewayAnalyzer", inputs=("Gateway", "Pod"))
def conflicting_gateways(ctx: CheckContext) -> list[Finding]:
    """IST0145 when gateways on the same workload serve the same host (exact, same bind) on the same port."""
    workloads = _GatewayWorkloads(ctx.snapshot)
    claims: dict[tuple[int, str, str], list[tuple[str, Selector]]] = defaultdict(list)
    gateways = istio_gateways(ctx.snapshot)
    for gateway in gateways:
        selector = frozenset(gateway_selector(gateway).items())
        for server in gateway_servers(gateway):
            for key in _server_claims(server):
                claims[key].append((gateway.qualified_name, selector))
    same_workload = _SameWorkload(workloads)
    findings: list[Finding] = []
    for gateway in gateways:
        name = gateway.qualified_name
        selector = frozenset(gateway_selector(gateway).items())
        for server in gateway_servers(gateway):
            others = {other for key in _server_claims(server) for other, other_selector in claims[key]
                      if other != name and same_workload(selector, other_selector)}
            if others:
                findings.append(report("IST0145", gateway, gateways=",".join(sorted(others)),
                                       selector=format_selector(dict(selector)), port=str(server_port(server)),
                                       hosts=",".join(str(h) for h in server.get("hosts") or ())))
    return unique(findings)


def _server_claims(server: Mapping[str, Any]) -> list[tuple[int, str, str]]:
    """(port, bind, host) a server claims; Istio rejects only exact duplicates, so wildcards do not overlap here."""
    port = server_port(server)
    if port is None:
        return []
    bind = str(server.get("bind") or "")
    return [(port, bind, str(host)) for host in server.get("hosts") or ()]


class _SameWorkload:
    """Two selectors share a workload when equal, or when one contains the other and a pod matches both."""

    def __init__(self, workloads: _GatewayWorkloads):
        self.workloads = workloads
        self._cache: dict[frozenset[Selector], bool] = {}

    def __call__(self, a: Selector, b: Selector) -> bool:
        if a == b:
            return True
        if not (a <= b or b <= a):
            return False
        key = frozenset((a, b))
        if key not in self._cache:
            self._cache[key] = bool(self.workloads.pods_for(dict(a | b)))
        return self._cache[key]


# --- duplicate certificates -------------------------------------------------------------------

@analyzer("gateway.CertificateAnalyzer", inputs=("Gateway",))
def duplicate_certificates(ctx: CheckContext) -> list[Finding]:
    """IST0138 when gateways on the same workload serve the same certificate.

    istio/istio pkg/config/analysis/analyzers/gateway/certificate.go; the 404s come from HTTP/2
    connection reuse across hosts that share a certificate (envoyproxy/envoy issue 6767).  A gateway
    whose selector is empty, or a subset of another's, is on the same workload.
    """
    gateways = istio_gateways(ctx.snapshot)
    # Only gateways serving a common certificate can be reported, so pair them through an index by
    # certificate instead of comparing every gateway with every other (2,000 gateways: 4 million pairs).
    serving: defaultdict[Any, list[int]] = defaultdict(list)
    certificates = [_certificate_keys(gateway) for gateway in gateways]
    for position, keys in enumerate(certificates):
        for key in keys:
            serving[key].append(position)
    selectors = [gateway_selector(gateway) for gateway in gateways]
    findings: list[Finding] = []
    for position, gateway in enumerate(gateways):
        sharing = sorted({other for key in certificates[position] for other in serving[key]})
        for other in (gateways[i] for i in sharing if _selector_subset(selectors[position], selectors[i])):
            if other.key != gateway.key:
                findings.append(report("IST0138", gateway,
                                       gateways=f"[{gateway.qualified_name} {other.qualified_name}]"))
    return unique(findings)


def _selector_subset(selector: Mapping[str, str], other: Mapping[str, str]) -> bool:
    return all(other.get(key) == value for key, value in selector.items())


def _certificate_keys(gateway: Resource) -> set[tuple[Any, ...]]:
    """What identifies each certificate a gateway serves: its credentialName, or else (with none) its
    serverCertificate and privateKey files, as certificate.go compares them."""
    keys: set[tuple[Any, ...]] = set()
    for server in gateway_servers(gateway):
        if not server.get("tls"):
            continue
        tls = mapping(server.get("tls"))
        name = tls.get("credentialName")
        if name:
            keys.add(("credentialName", _hashable(name)))
            continue
        certificate, private_key = tls.get("serverCertificate"), tls.get("privateKey")
        if certificate and private_key:
            keys.add(("files", _hashable(certificate), _hashable(private_key)))
    return keys


def _hashable(value: Any) -> Any:
    """A malformed field (a list where a string belongs) still compares by its value."""
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value
