"""Generate a realistic mesh of any size as Kubernetes objects (dicts) for the benchmarks.

Proportions follow the issue's target mesh: per 10,000 pods there are 2,000
Services, 1,000 VirtualServices, 1,000 DestinationRules and 200 Gateways, spread
over namespaces of 200 pods.  A few objects are broken on purpose so the
analyzers have something to report, like a real mesh.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PODS_PER_NAMESPACE = 200


def _certificate_pem(common_name: str, days: int) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def generate(pods: int) -> Iterator[dict]:
    services = pods // 5
    virtual_services = pods // 10
    destination_rules = pods // 10
    gateways = max(pods // 50, 1)
    namespaces = max(pods // PODS_PER_NAMESPACE, 1)
    root = _certificate_pem("Istio CA", 3650)
    gateway_certs = [_certificate_pem(f"gw-{i}.example.com", days) for i, days in enumerate((5, 40, 400))]

    yield {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}
    yield {"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "istio-ca-root-cert", "namespace": "istio-system"}, "data": {"root-cert.pem": root}}
    for i in range(3):
        yield _pod(f"istiod-{i}", "istio-system", {"app": "istiod"}, container="discovery")
    yield _pod("istio-ingressgateway-0", "istio-system", {"istio": "ingressgateway"})
    yield {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system"},
           "spec": {"selector": {"istio": "ingressgateway"},
                    "ports": [{"name": "http2", "port": 80, "targetPort": 8080},
                              {"name": "https", "port": 443, "targetPort": 8443}]}}

    yield from team_namespaces(namespaces, root)
    for s in range(services):
        yield service(s, namespaces)
    yield from app_pods(pods, services, namespaces, _pod, versions=2)

    for d in range(destination_rules):
        ns = f"team-{d % namespaces:03d}"
        yield {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
               "metadata": {"name": f"dr-{d}", "namespace": ns},
               "spec": {"host": f"svc-{d}", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                                        {"name": "v2", "labels": {"version": "v2"}}]}}

    for v in range(virtual_services):
        ns = f"team-{v % namespaces:03d}"
        subset = "v3" if v % 101 == 0 else "v1"  # a few point at a subset that does not exist
        yield {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
               "metadata": {"name": f"vs-{v}", "namespace": ns},
               "spec": {"hosts": [f"svc-{v}"],
                        "http": [{"route": [{"destination": {"host": f"svc-{v}", "subset": subset}, "weight": 90},
                                            {"destination": {"host": f"svc-{v}", "subset": "v2"}, "weight": 10}]}]}}

    for g in range(gateways):
        name = f"gw-{g}-tls"
        yield {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
               "metadata": {"name": f"gw-{g}", "namespace": "istio-system"},
               "spec": {"selector": {"istio": "ingressgateway"},
                        "servers": [{"port": {"number": 443, "name": f"https-{g}", "protocol": "HTTPS"},
                                     "hosts": [f"app-{g}.example.com"],
                                     "tls": {"mode": "SIMPLE", "credentialName": name}}]}}
        pem = gateway_certs[g % len(gateway_certs)]
        yield {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
               "metadata": {"name": name, "namespace": "istio-system"},
               "data": {"tls.crt": base64.b64encode(pem.encode()).decode()}}


# -- shared with bench/bench_cluster_scale.py: where the teams' namespaces, Services and pods go ----------------


def team_namespace(index: int, namespaces: int) -> str:
    return f"team-{index % namespaces:03d}"


def team_namespaces(namespaces: int, root_pem: str) -> Iterator[dict]:
    """The injection-enabled team namespaces, each with the root certificate ConfigMap istiod publishes there."""
    for n in range(namespaces):
        ns = team_namespace(n, namespaces)
        yield {"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": ns, "labels": {"istio-injection": "enabled"}}}
        yield {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio-ca-root-cert", "namespace": ns},
               "data": {"root-cert.pem": root_pem}}


def service(index: int, namespaces: int) -> dict:
    """Service ``svc-<index>``, selecting ``app: svc-<index>``, in its team's namespace."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"svc-{index}", "namespace": team_namespace(index, namespaces)},
            "spec": {"selector": {"app": f"svc-{index}"},
                     "ports": [{"name": "http", "port": 8080, "targetPort": 8080}]}}


def app_pods(pods: int, services: int, namespaces: int, make_pod: Callable[..., dict], *,
             versions: int) -> Iterator[dict]:
    """``pods`` pods spread evenly over the Services (``version`` label v1..v<versions>); one in 997 crash-looping."""
    for p in range(pods):
        s = p % services
        yield make_pod(f"svc-{s}-{p}", team_namespace(s, namespaces),
                       {"app": f"svc-{s}", "version": f"v{p % versions + 1}"}, restarts=30 if p % 997 == 0 else 0)


def _pod(name: str, namespace: str, labels: dict, *, container: str = "istio-proxy", restarts: int = 0) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1.0"},
                                {"name": container, "image": "docker.io/istio/proxyv2:1.22.3",
                                 "resources": {"limits": {"memory": "1Gi"}}}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [
                       {"name": "app", "ready": True, "restartCount": 0, "state": {"running": {}}},
                       {"name": container, "ready": True, "restartCount": restarts, "state": {"running": {}}}]},
    }
