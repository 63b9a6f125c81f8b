"""KubeSource: a Snapshot from kmock's emulated API server, read the way a live cluster should be."""

from __future__ import annotations

import base64
import json
import socket
import time
from typing import Any

import pytest

from commands.clients.kube import KubeClient
from commands.cluster.snapshot import Snapshot
from commands.cluster.sources.kube import KubeSource
from commands.errors import UserError
from commands.findings import Level
from commands.resources.kinds import KINDS
from tests.support.certs import mint
from tests.support.kube import FakeKube

ISTIO = "istio-system"
LISTED_KINDS = sorted(set(KINDS) - {"ConfigMap", "Secret"})


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def obj(kind: str, name: str, namespace: str | None = None, **fields: Any) -> dict[str, Any]:
    info = KINDS[kind]
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    metadata.update(fields.pop("metadata", {}))
    return {"apiVersion": info.api_version, "kind": kind, "metadata": metadata, **fields}


def tls_secret(name: str, namespace: str, **extra: str) -> dict[str, Any]:
    minted = mint(f"{name}.example.com")
    data = {"tls.crt": b64(minted.cert_pem), "tls.key": b64(minted.key_pem), **extra}
    return obj("Secret", name, namespace, type="kubernetes.io/tls", data=data)


def ca_secret(name: str) -> dict[str, Any]:
    root = mint("root", is_ca=True)
    return obj("Secret", name, ISTIO, data={"ca-cert.pem": b64(root.cert_pem), "ca-key.pem": b64(root.key_pem),
                                            "root-cert.pem": b64(root.cert_pem)})


MESH = "defaultConfig:\n  holdApplicationUntilProxyStarts: true\nenableAutoMtls: true\n"


@pytest.fixture
def mesh(kube: FakeKube) -> FakeKube:
    """A small mesh: istiod and an ingress gateway with a MUTUAL TLS credential, one app namespace."""
    kube.add(
        obj("Namespace", ISTIO), obj("Namespace", "prod", metadata={"labels": {"istio-injection": "enabled"}}),
        obj("Pod", "istiod-1", ISTIO, metadata={"labels": {"app": "istiod"}}, status={"phase": "Running"}),
        obj("Pod", "ingress-1", ISTIO, metadata={"labels": {"istio": "ingressgateway"}}),
        obj("Pod", "shop-1", "prod", metadata={"labels": {"app": "shop"}, "managedFields": [{"manager": "kubectl"}]}),
        obj("Service", "shop", "prod", spec={"ports": [{"name": "http", "port": 80}]}),
        obj("Deployment", "shop", "prod", spec={"replicas": 1}),
        obj("Gateway", "shop-gw", "prod", spec={"selector": {"istio": "ingressgateway"}, "servers": [
            {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["shop.example.com"],
             "tls": {"mode": "MUTUAL", "credentialName": "shop-cert"}}]}),
        obj("VirtualService", "shop", "prod", spec={"hosts": ["shop"], "gateways": ["shop-gw"]}),
        obj("DestinationRule", "shop", "prod", spec={"host": "shop"}),
        obj("ConfigMap", "istio-ca-root-cert", "prod", data={"root-cert.pem": "ROOT"}),
        obj("ConfigMap", "istio-ca-root-cert", ISTIO, data={"root-cert.pem": "ROOT"}),
        obj("ConfigMap", "istio", ISTIO, data={"mesh": MESH}),
        obj("ConfigMap", "istio-sidecar-injector", ISTIO, data={"config": "policy: enabled"}),
        obj("ConfigMap", "shop-settings", "prod", data={"password": "hunter2"}),
        tls_secret("shop-cert", ISTIO),
        obj("Secret", "shop-cert-cacert", ISTIO, data={"cacert": b64(mint("client-ca", is_ca=True).cert_pem)}),
        obj("Secret", "db-password", "prod", data={"password": b64("hunter2")}),
        ca_secret("istio-ca-secret"), ca_secret("cacerts"),
    )
    return kube


def read(kube: FakeKube, kinds: Any = tuple(KINDS), **options: Any) -> Snapshot:
    return KubeSource(kube.client(), **options).snapshot(kinds)


def names(snapshot: Snapshot, kind: str) -> set[str]:
    return {f"{r.namespace}/{r.name}" if r.namespace else r.name for r in snapshot.of_kind(kind)}


def codes_of(snapshot: Snapshot) -> list[str]:
    return [f.code for f in snapshot.read_problems]


# -- what is read, and how -------------------------------------------------------------------


def test_each_kind_is_listed_once_cluster_wide(mesh: FakeKube):
    read(mesh)

    for kind in LISTED_KINDS:
        info = KINDS[kind]
        prefix = f"/apis/{info.group}/{info.version}" if info.group else f"/api/{info.version}"
        assert mesh.count("GET", f"{prefix}/{info.plural}") == 1, kind
    namespaced_gets = [r.url.path for r in mesh.requests("GET") if "/namespaces/" in r.url.path]
    assert all("/secrets/" in p or p == f"/api/v1/namespaces/{ISTIO}/configmaps" for p in namespaced_gets)


def test_snapshot_holds_the_seeded_objects(mesh: FakeKube):
    snapshot = read(mesh)

    assert names(snapshot, "Pod") == {f"{ISTIO}/istiod-1", f"{ISTIO}/ingress-1", "prod/shop-1"}
    assert names(snapshot, "Namespace") == {ISTIO, "prod"}
    for kind, namespace, name in [("Gateway", "prod", "shop-gw"), ("VirtualService", "prod", "shop"),
                                  ("Service", "prod", "shop"), ("Deployment", "prod", "shop"),
                                  ("DestinationRule", "prod", "shop")]:
        assert snapshot.get(kind, namespace, name).body == mesh.object(kind, namespace, name)
    assert snapshot.read_problems == []
    assert snapshot.unreadable_kinds == set()


def test_only_the_requested_kinds_are_read(mesh: FakeKube):
    snapshot = read(mesh, ["VirtualService"])

    assert snapshot.kinds() == {"VirtualService"}
    assert [r.url.path for r in mesh.requests()] == ["/apis/networking.istio.io/v1/virtualservices"]


def test_managed_fields_are_stripped(mesh: FakeKube):
    snapshot = read(mesh, ["Pod"])

    assert "managedFields" not in snapshot.get("Pod", "prod", "shop-1").metadata
    assert snapshot.get("Pod", "prod", "shop-1").labels == {"app": "shop"}


def test_configmaps_are_the_root_certs_and_the_istio_namespace_only(mesh: FakeKube):
    snapshot = read(mesh, ["ConfigMap"])

    assert names(snapshot, "ConfigMap") == {
        "prod/istio-ca-root-cert", f"{ISTIO}/istio-ca-root-cert", f"{ISTIO}/istio", f"{ISTIO}/istio-sidecar-injector"}
    (everywhere,) = mesh.requests("GET", "/api/v1/configmaps")
    assert everywhere.params == {"fieldSelector": "metadata.name=istio-ca-root-cert", "limit": "500"}
    assert mesh.count("GET", f"/api/v1/namespaces/{ISTIO}/configmaps") == 1


def test_mesh_config_comes_from_the_istio_configmap(mesh: FakeKube):
    snapshot = read(mesh, ["ConfigMap"])

    assert snapshot.mesh_config == {"defaultConfig": {"holdApplicationUntilProxyStarts": True},
                                    "enableAutoMtls": True}


def test_istio_namespace_is_configurable(kube: FakeKube):
    kube.add(obj("ConfigMap", "istio", "mesh-cp", data={"mesh": "enableAutoMtls: false"}))

    snapshot = read(kube, ["ConfigMap"], istio_namespace="mesh-cp")

    assert snapshot.istio_namespace == "mesh-cp"
    assert snapshot.mesh_config == {"enableAutoMtls": False}


# -- secrets ----------------------------------------------------------------------------------


def test_gateway_credentials_are_fetched_by_name_and_secrets_are_never_listed(mesh: FakeKube):
    snapshot = read(mesh)

    assert names(snapshot, "Secret") == {f"{ISTIO}/shop-cert", f"{ISTIO}/shop-cert-cacert"}
    secret_paths = sorted(r.url.path for r in mesh.requests() if "secrets" in r.url.path)
    assert secret_paths == [f"/api/v1/namespaces/{ISTIO}/secrets/shop-cert",
                            f"/api/v1/namespaces/{ISTIO}/secrets/shop-cert-cacert"]
    assert not [r for r in mesh.requests() if r.url.path.endswith("/secrets")]


def test_asking_for_secrets_alone_still_reads_the_gateways_that_name_them(mesh: FakeKube):
    snapshot = read(mesh, ["Secret"])

    assert names(snapshot, "Secret") == {f"{ISTIO}/shop-cert", f"{ISTIO}/shop-cert-cacert"}


def test_ca_secrets_are_not_read_unless_opted_in(mesh: FakeKube):
    snapshot = read(mesh)

    assert snapshot.get("Secret", ISTIO, "istio-ca-secret") is None
    assert snapshot.get("Secret", ISTIO, "cacerts") is None
    assert not [r for r in mesh.requests() if r.url.path.endswith(("/istio-ca-secret", "/cacerts"))]


def test_a_gateway_naming_the_ca_secret_does_not_make_meshbot_read_it_without_the_opt_in(mesh: FakeKube):
    # Anyone who may create a Gateway could otherwise point its credentialName at the CA's private key.
    mesh.add(obj("Gateway", "sneaky", ISTIO, spec={"servers": [{
        "port": {"number": 443}, "hosts": ["*"], "tls": {"mode": "SIMPLE", "credentialName": "istio-ca-secret"}}]}))

    snapshot = read(mesh, ["Secret"], extra_secrets=[(ISTIO, "cacerts")])

    assert snapshot.get("Secret", ISTIO, "istio-ca-secret") is None
    assert not [r for r in mesh.requests() if r.url.path.endswith(("/istio-ca-secret", "/cacerts"))]


def test_ca_secrets_are_read_when_opted_in_without_their_keys(mesh: FakeKube):
    snapshot = read(mesh, ["Secret"], read_ca_secrets=True)

    for name in ("istio-ca-secret", "cacerts"):
        assert set(snapshot.get("Secret", ISTIO, name).body["data"]) == {"ca-cert.pem", "root-cert.pem"}


def test_extra_secrets_are_fetched_by_name(mesh: FakeKube):
    snapshot = read(mesh, ["Secret"], extra_secrets=[("prod", "db-password")])

    assert snapshot.get("Secret", "prod", "db-password").body["data"] == {}
    assert mesh.count("GET", "/api/v1/namespaces/prod/secrets/db-password") == 1


def test_private_keys_never_enter_the_snapshot(mesh: FakeKube):
    snapshot = read(mesh, read_ca_secrets=True, extra_secrets=[("prod", "db-password")])

    everything = json.dumps([r.body for r in snapshot])
    decoded = " ".join(base64.b64decode(v).decode(errors="replace")
                       for r in snapshot.of_kind("Secret") for v in (r.body.get("data") or {}).values())
    assert len(snapshot.of_kind("Secret")) == 5
    for secret_marker in ("PRIVATE KEY", "tls.key", "ca-key.pem", "hunter2"):
        assert secret_marker not in everything
        assert secret_marker not in decoded
    assert "BEGIN CERTIFICATE" in decoded


def test_a_missing_secret_is_simply_absent(kube: FakeKube):
    kube.add(obj("Gateway", "gw", "prod", spec={"servers": [{"port": {"number": 443}, "hosts": ["*"],
                                                            "tls": {"mode": "SIMPLE", "credentialName": "gone"}}]}))

    snapshot = read(kube, ["Secret"])

    assert snapshot.of_kind("Secret") == []
    assert snapshot.read_problems == []
    assert snapshot.can_trust_absence("Secret")
    assert kube.count("GET", "/api/v1/namespaces/prod/secrets/gone") == 1


# -- what cannot be read ----------------------------------------------------------------------


def test_forbidden_pods_become_mb0001_while_other_kinds_are_still_read(mesh: FakeKube):
    mesh.fail("Pod", 403)

    snapshot = read(mesh)

    (problem,) = snapshot.read_problems
    assert problem.code == "MB0001" and problem.level == Level.ERROR
    assert problem.message == "meshbot cannot list pods cluster-wide: forbidden (needs RBAC list on pods)"
    assert snapshot.unreadable_kinds == {"Pod"}
    assert not snapshot.can_trust_absence("Pod")
    assert names(snapshot, "Gateway") == {"prod/shop-gw"}
    assert names(snapshot, "VirtualService") == {"prod/shop"}


def test_forbidden_secret_names_the_secret_and_marks_secrets_unreadable(mesh: FakeKube):
    mesh.fail("Secret", 403, verb="get", name="shop-cert")

    snapshot = read(mesh, ["Secret"])

    (problem,) = snapshot.read_problems
    assert problem.code == "MB0001"
    assert f"cannot get secrets {ISTIO}/shop-cert: forbidden (needs RBAC get on secrets)" in problem.message
    assert "Secret" in snapshot.unreadable_kinds
    assert names(snapshot, "Secret") == {f"{ISTIO}/shop-cert-cacert"}


def test_forbidden_istio_namespace_configmaps_name_the_namespace(mesh: FakeKube):
    mesh.fail("ConfigMap", 403, namespace=ISTIO)

    snapshot = read(mesh, ["ConfigMap"])

    (problem,) = snapshot.read_problems
    assert problem.message.startswith(f"meshbot cannot list configmaps in namespace {ISTIO}: forbidden")
    assert snapshot.unreadable_kinds == {"ConfigMap"}
    assert names(snapshot, "ConfigMap") == {"prod/istio-ca-root-cert", f"{ISTIO}/istio-ca-root-cert"}


def test_unauthorized_is_mb0001(mesh: FakeKube):
    mesh.fail("Service", 401)

    snapshot = read(mesh, ["Service"])

    assert codes_of(snapshot) == ["MB0001"]
    assert "unauthorized" in snapshot.read_problems[0].message


def test_a_timeout_becomes_mb0002_within_about_the_timeout(mesh: FakeKube):
    mesh.slow("Service", 5)
    source = KubeSource(mesh.client(timeout=0.5))

    started = time.monotonic()
    snapshot = source.snapshot(["Service", "Pod"])

    assert time.monotonic() - started < 1.5
    (problem,) = snapshot.read_problems
    assert problem.code == "MB0002" and problem.level == Level.ERROR
    assert problem.message == "The Kubernetes API did not answer list services cluster-wide: no answer within 0.5s"
    assert snapshot.unreadable_kinds == {"Service"}
    assert len(snapshot.of_kind("Pod")) == 3


def test_a_server_error_becomes_mb0002(mesh: FakeKube):
    mesh.fail("VirtualService", 500)

    snapshot = read(mesh, ["VirtualService"])

    assert codes_of(snapshot) == ["MB0002"]
    assert "HTTP 500" in snapshot.read_problems[0].message
    assert snapshot.unreadable_kinds == {"VirtualService"}


def test_an_uninstalled_crd_is_mb0003_info_and_its_absence_is_real(mesh: FakeKube):
    mesh.not_served("EnvoyFilter")

    snapshot = read(mesh, ["EnvoyFilter", "VirtualService"])

    (problem,) = snapshot.read_problems
    assert problem.code == "MB0003" and problem.level == Level.INFO
    assert "envoyfilters.networking.istio.io (networking.istio.io/v1alpha3)" in problem.message
    assert snapshot.unreadable_kinds == set()
    assert snapshot.can_trust_absence("EnvoyFilter")


def test_missing_metrics_server_is_mb0003(mesh: FakeKube):
    mesh.not_served("PodMetrics")

    snapshot = read(mesh, ["PodMetrics"])

    (problem,) = snapshot.read_problems
    assert problem.code == "MB0003"
    assert "pods.metrics.k8s.io" in problem.message
    assert problem.evidence == {"hint": "metrics-server is not installed"}


def test_an_unreachable_api_server_gives_findings_not_exceptions():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    source = KubeSource(KubeClient.for_host(f"http://127.0.0.1:{port}", timeout=1))

    snapshot = source.snapshot(["Pod", "Gateway", "ConfigMap", "Secret"])

    (problem,) = snapshot.read_problems  # one finding, not one timeout per kind
    assert problem.code == "MB0002" and "connection refused" in problem.message
    assert snapshot.unreadable_kinds == {"Pod", "Gateway", "ConfigMap"}


def test_two_timeouts_in_a_row_stop_further_lists(mesh: FakeKube):
    mesh.slow("Service", 5)
    mesh.slow("Pod", 5)
    source = KubeSource(mesh.client(timeout=0.5))

    started = time.monotonic()
    snapshot = source.snapshot(["Pod", "Service", "VirtualService", "DestinationRule", "Gateway"])

    assert time.monotonic() - started < 2.5
    assert codes_of(snapshot) == ["MB0002", "MB0002"]
    assert snapshot.unreadable_kinds == {"Pod", "Service", "VirtualService", "DestinationRule", "Gateway"}


def test_unknown_kinds_are_a_user_error(kube: FakeKube):
    with pytest.raises(UserError, match="Banana"):
        read(kube, ["Pod", "Banana"])


def test_in_cluster_istiod_and_envoy_admin_are_both_reached_through_a_port_forward_unless_istiod_direct_is_set():
    import contextlib

    from commands.cluster.endpoints import EndpointResolver
    from commands.cluster.snapshot import Resource, Snapshot
    from commands.resources.references import PodRef

    forwarded: list[tuple[PodRef, int]] = []

    class RecordingForwarder:  # Envoy admin listens on 127.0.0.1 inside the pod: only a port-forward reaches it
        @contextlib.contextmanager
        def forward(self, pod, port):
            forwarded.append((pod, port))
            yield f"http://127.0.0.1:{40000 + port}"

    opened: list[str] = []
    resolver = EndpointResolver(http=lambda url: opened.append(url) or url, port_forwarder=RecordingForwarder(),
                                direct_pod_ips=True)
    def pod(namespace, name, ip, labels):
        return Resource.from_object({"apiVersion": "v1", "kind": "Pod",
                                     "metadata": {"name": name, "namespace": namespace, "labels": labels},
                                     "status": {"phase": "Running", "podIP": ip}})

    istiod = pod("istio-system", "istiod-1", "10.0.0.5", {"app": "istiod"})
    web = pod("prod", "web-1", "10.0.0.7", {"app": "web"})
    snapshot = Snapshot([istiod, web], istio_namespace="istio-system")
    with resolver.open_envoy(PodRef("prod", "web-1"), snapshot):
        pass
    with resolver.open_istiod(istiod):
        pass
    # istiod answers /debug/* unauthenticated only to loopback (pilot/pkg/xds/debug.go): a forward makes us loopback.
    assert opened == ["http://127.0.0.1:55000", "http://127.0.0.1:55014"]
    assert forwarded == [(PodRef("prod", "web-1"), 15000), (PodRef("istio-system", "istiod-1"), 15014)]

    opened.clear()
    direct = EndpointResolver(http=lambda url: opened.append(url) or url, port_forwarder=RecordingForwarder(),
                              direct_pod_ips=True, istiod_direct=True, istiod_http=lambda url: opened.append(url) or url)
    with direct.open_istiod(istiod):
        pass
    assert opened == ["http://10.0.0.5:15014"]
