"""The Kubernetes and Istio kinds meshbot reads, and where the API serves them."""

from __future__ import annotations

from dataclasses import dataclass

ISTIO_GROUPS = frozenset({
    "networking.istio.io", "security.istio.io", "telemetry.istio.io",
    "extensions.istio.io", "install.istio.io",
})


@dataclass(frozen=True)
class KindInfo:
    kind: str
    group: str
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:
        """``pods``, ``virtualservices.networking.istio.io`` — the RBAC resource name."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


_ALL = [
    KindInfo("Namespace", "", "v1", "namespaces", namespaced=False),
    KindInfo("Pod", "", "v1", "pods"),
    KindInfo("Service", "", "v1", "services"),
    KindInfo("ConfigMap", "", "v1", "configmaps"),
    KindInfo("Secret", "", "v1", "secrets"),
    KindInfo("Deployment", "apps", "v1", "deployments"),
    KindInfo("Event", "", "v1", "events"),
    KindInfo("PodMetrics", "metrics.k8s.io", "v1beta1", "pods"),
    KindInfo("MutatingWebhookConfiguration", "admissionregistration.k8s.io", "v1",
             "mutatingwebhookconfigurations", namespaced=False),
    KindInfo("ValidatingWebhookConfiguration", "admissionregistration.k8s.io", "v1",
             "validatingwebhookconfigurations", namespaced=False),
    KindInfo("VirtualService", "networking.istio.io", "v1", "virtualservices"),
    KindInfo("DestinationRule", "networking.istio.io", "v1", "destinationrules"),
    KindInfo("Gateway", "networking.istio.io", "v1", "gateways"),
    KindInfo("ServiceEntry", "networking.istio.io", "v1", "serviceentries"),
    KindInfo("Sidecar", "networking.istio.io", "v1", "sidecars"),
    KindInfo("WorkloadEntry", "networking.istio.io", "v1", "workloadentries"),
    KindInfo("EnvoyFilter", "networking.istio.io", "v1alpha3", "envoyfilters"),
    KindInfo("PeerAuthentication", "security.istio.io", "v1", "peerauthentications"),
    KindInfo("AuthorizationPolicy", "security.istio.io", "v1", "authorizationpolicies"),
    KindInfo("RequestAuthentication", "security.istio.io", "v1", "requestauthentications"),
    KindInfo("Telemetry", "telemetry.istio.io", "v1", "telemetries"),
    KindInfo("WasmPlugin", "extensions.istio.io", "v1alpha1", "wasmplugins"),
    KindInfo("HTTPRoute", "gateway.networking.k8s.io", "v1", "httproutes"),
    KindInfo("GRPCRoute", "gateway.networking.k8s.io", "v1", "grpcroutes"),
    KindInfo("Lease", "coordination.k8s.io", "v1", "leases"),
]

KINDS: dict[str, KindInfo] = {k.kind: k for k in _ALL}

# Istio kinds that exist but meshbot does not analyze: accepted in files without complaint.
KNOWN_ISTIO_KINDS = frozenset({
    *(k.kind for k in _ALL if k.group in ISTIO_GROUPS),
    "WorkloadGroup", "ProxyConfig", "WasmPlugin", "IstioOperator",
})


def kind_info(kind: str) -> KindInfo:
    return KINDS[kind]


def is_namespaced(kind: str) -> bool:
    info = KINDS.get(kind)
    return info.namespaced if info else True
