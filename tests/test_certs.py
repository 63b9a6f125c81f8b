"""The ``certs`` check: mesh root, root ConfigMaps, gateway secrets, real Envoy /certs, istiod metrics."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from commands.certificates.secrets import public_secret
from commands.checks.certs import certs
from commands.checks.registry import CheckContext, Thresholds
from commands.clients.http import http_endpoint
from commands.cluster.endpoints import EndpointResolver
from commands.cluster.snapshot import Resource, Snapshot
from commands.findings import Finding, Level
from commands.resources.references import PodRef
from tests.support.certs import Minted, mint
from tests.support.envoy import RunningEnvoy
from tests.support.http_server import ProgrammableServer

ISTIO = "istio-system"
WORKLOAD = PodRef("prod", "payment-7d9f8c6b5-x2x9q")
SPIFFE = "spiffe://cluster.local/ns/prod/sa/payment"


# -- building a cluster ---------------------------------------------------------------

def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(namespace: str, name: str, annotations: Mapping[str, str] | None = None, **data: str) -> dict[str, Any]:
    """A Secret; keyword names use _ for . and - (tls_crt -> tls.crt, ca_cert_pem -> ca-cert.pem)."""
    keys = {k.replace("_pem", ".pem").replace("tls_", "tls.").replace("_", "-"): b64(v) for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace,
                                                               "annotations": dict(annotations or {})},
            "data": keys}


def root_configmap(namespace: str, *roots: Minted) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio-ca-root-cert", "namespace": namespace},
            "data": {"root-cert.pem": "".join(r.cert_pem for r in roots)}}


def injected_pod(namespace: str, name: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace,
                                                            "labels": dict(labels or {})},
            "spec": {"containers": [{"name": "app"}, {"name": "istio-proxy"}]}, "status": {"phase": "Running"}}


def ingress_gateway(credential: str) -> list[dict[str, Any]]:
    """An Istio Gateway on port 443 whose workload runs in istio-system."""
    return [
        injected_pod(ISTIO, "istio-ingressgateway-5d8f7c9b6-abcde", labels={"istio": "ingressgateway"}),
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
         "metadata": {"name": "public-gateway", "namespace": "prod"},
         "spec": {"selector": {"istio": "ingressgateway"}, "servers": [{
             "port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["shop.example.com"],
             "tls": {"mode": "SIMPLE", "credentialName": credential}}]}},
    ]


def snapshot(*objects: dict[str, Any] | Iterable[dict[str, Any]]) -> Snapshot:
    flat: list[dict[str, Any]] = []
    for obj in objects:
        flat.extend([obj] if isinstance(obj, dict) else obj)
    return Snapshot([Resource.from_object(o) for o in flat], istio_namespace=ISTIO)


def run_certs(cluster: Snapshot, *, envoys: Mapping[PodRef, str] | None = None, istiod: Iterable[str] = (),
              namespace: str | None = None, now: datetime | None = None) -> list[Finding]:
    endpoints = None
    if envoys is not None or istiod:
        endpoints = EndpointResolver(http=http_endpoint, envoy_admin_urls=dict(envoys or {}),
                                     istiod_urls=list(istiod))
    return certs(CheckContext(snapshot=cluster, now=now or datetime.now(timezone.utc), namespace=namespace,
                              thresholds=Thresholds(), endpoints=endpoints))


def codes_of(findings: list[Finding]) -> list[str]:
    return sorted(f.code for f in findings)


def only(findings: list[Finding], code: str) -> Finding:
    matching = [f for f in findings if f.code == code]
    assert len(matching) == 1, [(f.code, f.origin, f.message) for f in findings]
    return matching[0]


def root_ca(days: float = 3650, **kwargs: Any) -> Minted:
    return mint("Istio CA", is_ca=True, organization="cluster.local", days=days, **kwargs)


def workload_cert(issuer: Minted, **validity: Any) -> Minted:
    return mint("payment", issuer=issuer, uris=(SPIFFE,), **validity)


# -- workload certificates from the real Envoy ----------------------------------------

@pytest.mark.envoy
def test_expired_workload_cert_is_error_even_when_envoy_says_0_days(
        envoy_with_cert: Callable[..., RunningEnvoy]) -> None:
    now = datetime.now(timezone.utc)
    expired = workload_cert(root_ca(), not_before=now - timedelta(days=3), not_after=now - timedelta(days=2))
    proxy = envoy_with_cert(expired.cert_pem, expired.key_pem)
    loaded = proxy.admin_json("/certs")["certificates"][0]["cert_chain"][0]
    assert loaded["days_until_expiration"] == "0"  # what Envoy says about a cert expired 2 days ago

    finding = only(run_certs(snapshot(), envoys={WORKLOAD: proxy.admin_url}), "MB3001")

    assert finding.level is Level.ERROR
    assert finding.origin == f"Pod {WORKLOAD}"
    assert finding.message.startswith(f'Workload certificate "{SPIFFE}" expired 2 days ago')
    assert finding.evidence["days_left"] == -2
    assert finding.evidence["serial"] == expired.serial_hex
    assert "restart" in finding.remediation.summary
    assert finding.remediation.command == f"kubectl -n prod delete pod {WORKLOAD.name}"


@pytest.mark.envoy
def test_workload_cert_expiring_in_5_days_is_error(envoy_with_cert: Callable[..., RunningEnvoy]) -> None:
    expiring = workload_cert(root_ca(), days=5)
    proxy = envoy_with_cert(expiring.cert_pem, expiring.key_pem)

    finding = only(run_certs(snapshot(), envoys={WORKLOAD: proxy.admin_url}), "MB3002")

    assert finding.level is Level.ERROR
    assert "expires in 4 days 23 hours" in finding.message
    assert finding.evidence["sans"] == [SPIFFE]


@pytest.mark.envoy
def test_valid_workload_cert_gives_no_finding(envoy_with_cert: Callable[..., RunningEnvoy]) -> None:
    root = root_ca()
    valid = workload_cert(root, days=200)
    proxy = envoy_with_cert(valid.cert_pem, valid.key_pem, root.cert_pem)

    assert run_certs(snapshot(), envoys={WORKLOAD: proxy.admin_url}) == []


@pytest.mark.envoy
def test_envoy_without_a_workload_certificate_is_error(envoy_factory: Callable[..., RunningEnvoy]) -> None:
    proxy = envoy_factory(ca_pem=root_ca().cert_pem)  # a CA loaded, no certificate of its own
    assert proxy.admin_json("/certs")["certificates"][0]["cert_chain"] == []

    finding = only(run_certs(snapshot(), envoys={WORKLOAD: proxy.admin_url}), "MB3014")

    assert finding.level is Level.ERROR and finding.origin == f"Pod {WORKLOAD}"


def test_unreachable_envoy_admin_is_reported_by_the_certs_check() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"

    finding = only(run_certs(snapshot(), envoys={WORKLOAD: closed}), "MB4006")

    assert (finding.check, finding.level) == ("certs", Level.ERROR)


def test_no_endpoints_means_no_workload_findings() -> None:
    assert run_certs(snapshot(injected_pod("prod", "payment-1"), root_configmap("prod", root_ca()))) == []


@pytest.mark.envoy
def test_root_loaded_by_envoy_is_the_mesh_root_reported_once(envoy_with_cert: Callable[..., RunningEnvoy]) -> None:
    root = root_ca(days=20)
    leaf = workload_cert(root, days=1 / 2)
    proxy = envoy_with_cert(leaf.cert_pem, leaf.key_pem, root.cert_pem)
    cluster = snapshot(root_configmap(ISTIO, root), root_configmap("prod", root))

    findings = run_certs(cluster, envoys={WORKLOAD: proxy.admin_url})

    root_finding = only(findings, "MB3003")
    assert root_finding.origin == f"ConfigMap {ISTIO}/istio-ca-root-cert"
    assert root_finding.evidence["dependents"] == [f"Pod {WORKLOAD}", f"namespace {ISTIO}", "namespace prod"]
    assert only(findings, "MB3002").origin == f"Pod {WORKLOAD}"  # the 12-hour workload certificate


@pytest.mark.envoy
def test_short_lived_workload_cert_past_rotation_point_is_a_rotation_warning_not_a_day_threshold_error(
        envoy_with_cert: Callable[..., RunningEnvoy]) -> None:
    now = datetime.now(timezone.utc)
    stuck = workload_cert(root_ca(), not_before=now - timedelta(hours=20), not_after=now + timedelta(hours=4))
    proxy = envoy_with_cert(stuck.cert_pem, stuck.key_pem)

    finding = only(run_certs(snapshot(), envoys={WORKLOAD: proxy.admin_url}), "MB3006")

    assert finding.level is Level.WARNING
    assert "83% through its 1 day lifetime" in finding.message


@pytest.mark.envoy
def test_fresh_24h_workload_cert_is_quiet_although_inside_the_7_day_threshold(
        envoy_with_cert: Callable[..., RunningEnvoy]) -> None:
    now = datetime.now(timezone.utc)
    fresh = workload_cert(root_ca(), not_before=now - timedelta(hours=2), not_after=now + timedelta(hours=22))
    proxy = envoy_with_cert(fresh.cert_pem, fresh.key_pem)

    assert run_certs(snapshot(), envoys={WORKLOAD: proxy.admin_url}) == []


# -- the mesh root CA and the root ConfigMaps -----------------------------------------

def test_mesh_root_from_the_configmap_when_no_ca_secret_is_readable() -> None:
    root = root_ca(days=20)

    finding = only(run_certs(snapshot(root_configmap(ISTIO, root))), "MB3003")

    assert finding.level is Level.WARNING
    assert finding.origin == f"ConfigMap {ISTIO}/istio-ca-root-cert"
    assert finding.message.startswith('Mesh root CA "CN=Istio CA,O=cluster.local" expires in 19 days 23 hours')
    evidence = finding.evidence
    assert evidence["fingerprint"] == root.cert.fingerprint(root.cert.signature_hash_algorithm).hex(":").upper()
    assert (evidence["serial"], evidence["days_left"]) == (root.serial_hex, 19)
    assert set(evidence) == {"subject", "issuer", "sans", "serial", "not_before", "not_after", "fingerprint",
                             "days_left", "dependents", "role"}
    assert evidence["role"] == "mesh-root"  # triage tells the mesh root from gateway certificates by it


def test_expired_self_signed_root_is_renewed_in_place_by_istiods_rotator_never_by_deleting_the_secret() -> None:
    now = datetime.now(timezone.utc)
    root = root_ca(not_after=now - timedelta(minutes=26))

    finding = only(run_certs(snapshot(secret(ISTIO, "istio-ca-secret", ca_cert_pem=root.cert_pem),
                                      root_configmap(ISTIO, root)), now=now), "MB3001")

    assert finding.origin == f"Secret {ISTIO}/istio-ca-secret"
    assert "expired 26 minutes ago" in finding.message
    summary, command = finding.remediation.summary, finding.remediation.command
    assert "from the same key" in summary and "Never delete istio-ca-secret" in summary
    # Not Istio's defaults (1h, 20%, jitter on), which would change nothing: a 10-minute check without jitter.
    assert command == ("kubectl -n istio-system set env deployment/istiod -c discovery "
                       "CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL=10m "
                       "CITADEL_ENABLE_JITTER_FOR_ROOT_CERT_ROTATOR=false")
    assert "istiod was not running" in summary and "put the env back" in summary
    assert "delete" not in command


def test_plugged_in_cacerts_report_the_intermediate_and_how_to_rotate_it() -> None:
    root = root_ca()
    intermediate = mint("Intermediate CA", issuer=root, is_ca=True, days=3)
    cacerts = secret(ISTIO, "cacerts", ca_cert_pem=intermediate.cert_pem, root_cert_pem=root.cert_pem,
                     cert_chain_pem=intermediate.cert_pem + root.cert_pem)

    findings = run_certs(snapshot(cacerts, root_configmap(ISTIO, root)))

    finding = only(findings, "MB3002")
    assert finding.origin == f"Secret {ISTIO}/cacerts"
    assert finding.message.startswith('Mesh CA certificate "CN=Intermediate CA"')
    assert "create secret generic cacerts" in finding.remediation.command


def test_root_configmap_without_the_mesh_root_is_error() -> None:
    root, foreign = root_ca(), root_ca()
    cluster = snapshot(secret(ISTIO, "istio-ca-secret", ca_cert_pem=root.cert_pem),
                       root_configmap(ISTIO, root), root_configmap("legacy", foreign))

    finding = only(run_certs(cluster), "MB3010")

    assert finding.level is Level.ERROR
    assert finding.origin == "ConfigMap legacy/istio-ca-root-cert"
    fingerprint = parse_fingerprint(root)
    assert fingerprint in finding.message
    assert finding.evidence["found"][0]["fingerprint"] == parse_fingerprint(foreign)
    assert finding.remediation.command == "kubectl -n legacy delete configmap istio-ca-root-cert"


def test_rotation_bundle_that_contains_the_mesh_root_is_fine() -> None:
    old, new = root_ca(days=400), root_ca(days=3650)
    cluster = snapshot(secret(ISTIO, "istio-ca-secret", ca_cert_pem=new.cert_pem),
                       root_configmap(ISTIO, old, new), root_configmap("prod", new, old))

    assert run_certs(cluster) == []


def test_injected_namespace_without_root_configmap_is_warned() -> None:
    cluster = snapshot(root_configmap(ISTIO, root_ca()), injected_pod("prod", "payment-1"),
                       {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain", "namespace": "batch"},
                        "spec": {"containers": [{"name": "job"}]}})

    finding = only(run_certs(cluster), "MB3011")

    assert (finding.level, finding.origin) == (Level.WARNING, "Namespace prod")


def test_each_certificate_is_reported_once_with_every_dependent_namespace() -> None:
    root = root_ca(days=60)
    cluster = snapshot(root_configmap(ns, root) for ns in (ISTIO, "prod", "legacy", "shop"))

    finding = only(run_certs(cluster), "MB3004")

    assert finding.level is Level.INFO
    assert finding.evidence["dependents"] == [f"namespace {ns}" for ns in sorted((ISTIO, "prod", "legacy", "shop"))]


def test_unparsable_root_configmap_is_a_warning() -> None:
    broken = root_configmap("prod")
    broken["data"]["root-cert.pem"] = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"

    finding = only(run_certs(snapshot(root_configmap(ISTIO, root_ca()), broken)), "MB3013")

    assert (finding.level, finding.origin) == (Level.WARNING, "ConfigMap prod/istio-ca-root-cert")


def test_namespace_scope_reports_only_that_namespace() -> None:
    root, foreign = root_ca(), root_ca()
    cluster = snapshot(root_configmap(ISTIO, root), root_configmap("legacy", foreign), root_configmap("prod", foreign))

    assert [f.origin for f in run_certs(cluster, namespace="prod")] == ["ConfigMap prod/istio-ca-root-cert"]


# -- gateway credentials ----------------------------------------------------------------

def test_gateway_secret_missing_is_error() -> None:
    finding = only(run_certs(snapshot(ingress_gateway("shop-example-com-tls"))), "MB3012")

    assert finding.level is Level.ERROR
    assert finding.origin == "Gateway prod/public-gateway"
    assert "Secret istio-system/shop-example-com-tls does not exist" in finding.message
    assert finding.remediation.command.startswith("kubectl -n istio-system create secret tls shop-example-com-tls")


def test_gateway_secret_without_a_certificate_is_error() -> None:
    empty = secret(ISTIO, "shop-example-com-tls")

    finding = only(run_certs(snapshot(ingress_gateway("shop-example-com-tls"), empty)), "MB3012")

    assert "has no certificate (tls.crt or cert)" in finding.message


def test_gateway_certificate_expiring_in_5_days_is_error_with_cert_manager_hint() -> None:
    issuer = mint("Example Issuing CA", is_ca=True)
    served = mint("shop.example.com", issuer=issuer, dns_names=("shop.example.com",), days=5)
    tls = secret(ISTIO, "shop-example-com-tls", annotations={"cert-manager.io/certificate-name": "shop"},
                 tls_crt=served.cert_pem + issuer.cert_pem, tls_key=served.key_pem)

    findings = run_certs(snapshot(ingress_gateway("shop-example-com-tls"), tls))

    finding = only(findings, "MB3002")
    assert finding.origin == f"Secret {ISTIO}/shop-example-com-tls"
    assert finding.message.startswith('Gateway TLS certificate "CN=shop.example.com" expires in 4 days 23 hours')
    assert finding.evidence["sans"] == ["shop.example.com"]
    assert finding.evidence["dependents"] == ["Gateway prod/public-gateway port 443"]
    assert finding.remediation.command == "cmctl renew shop -n istio-system"


# -- istiod's metrics ------------------------------------------------------------------

def metrics(root_expiry: datetime, chain_expiry: datetime) -> str:
    return (
        "# HELP citadel_server_root_cert_expiry_timestamp The unix timestamp, in seconds, when Citadel root "
        "cert will expire.\n"
        "# TYPE citadel_server_root_cert_expiry_timestamp gauge\n"
        f"citadel_server_root_cert_expiry_timestamp {root_expiry.timestamp():.9e}\n"
        "# TYPE citadel_server_cert_chain_expiry_timestamp gauge\n"
        f"citadel_server_cert_chain_expiry_timestamp {int(chain_expiry.timestamp())}\n"
        'pilot_xds_pushes{type="cds"} 42\n'
    )


def test_istiod_metrics_report_ca_expiry_without_secret_access(istiod_server: ProgrammableServer) -> None:
    now = datetime.now(timezone.utc)
    istiod_server.answer("/metrics", metrics(now + timedelta(days=5, hours=3, minutes=30), now + timedelta(days=400)))

    findings = run_certs(snapshot(), istiod=[istiod_server.url], now=now)

    root = only(findings, "MB3002")
    assert root.message.startswith("Mesh root CA (per istiod) expires in 5 days 3 hours")
    assert root.origin == f"istiod {istiod_server.url}"
    assert root.evidence["metric"] == "citadel_server_root_cert_expiry_timestamp"
    assert "cacerts" in root.remediation.summary
    chain = only(findings, "MB3015")
    assert chain.level is Level.INFO and "mesh CA certificate chain expires on" in chain.message
    assert [r.path for r in istiod_server.requests] == ["/metrics"]


def test_istiod_expiry_of_a_root_already_reported_is_not_repeated(istiod_server: ProgrammableServer) -> None:
    root = root_ca(days=20)
    istiod_server.answer("/metrics", metrics(root.cert.not_valid_after_utc, root.cert.not_valid_after_utc))

    findings = run_certs(snapshot(root_configmap(ISTIO, root)), istiod=[istiod_server.url])

    assert [(f.code, f.origin) for f in findings] == [("MB3003", f"ConfigMap {ISTIO}/istio-ca-root-cert")]


def test_unreachable_istiod_metrics_skip_only_that_part(istiod_server: ProgrammableServer) -> None:
    istiod_server.answer("/metrics", "unavailable", status=503)

    finding = only(run_certs(snapshot(), istiod=[istiod_server.url]), "MB0004")

    assert finding.level is Level.INFO and "istiod CA metrics" in finding.message


def ca_counters(requests: int, issued: int, sign_errors: int, auth_failures: int = 0) -> str:
    # Names and labels as security/pkg/server/ca/monitoring.go registers them.
    return (
        "# TYPE citadel_server_csr_count counter\n"
        f"citadel_server_csr_count {requests}\n"
        "# TYPE citadel_server_success_cert_issuance_count counter\n"
        f"citadel_server_success_cert_issuance_count {issued}\n"
        "# TYPE citadel_server_csr_sign_err_count counter\n"
        f'citadel_server_csr_sign_err_count{{error_type="CA_CERT_ERROR"}} {sign_errors}\n'
        "# TYPE citadel_server_authentication_failure_count counter\n"
        f"citadel_server_authentication_failure_count {auth_failures}\n"
    )


def test_istiod_ca_failing_to_sign_is_an_error_that_forbids_restarts(istiod_server: ProgrammableServer) -> None:
    istiod_server.answer("/metrics", ca_counters(requests=52, issued=12, sign_errors=40))

    finding = only(run_certs(snapshot(), istiod=[istiod_server.url]), "MB3020")

    assert finding.level is Level.ERROR
    assert finding.message.startswith(f"istiod's CA in {istiod_server.url} failed 40 of 52 certificate requests")
    assert "do not restart" in finding.remediation.summary
    assert "delete" not in finding.remediation.command


def test_a_healthy_ca_and_callers_failing_authentication_are_not_a_failing_ca(
        istiod_server: ProgrammableServer) -> None:
    istiod_server.answer("/metrics", ca_counters(requests=500, issued=480, sign_errors=0, auth_failures=20))

    assert [f for f in run_certs(snapshot(), istiod=[istiod_server.url]) if f.code == "MB3020"] == []


def test_a_few_signing_errors_long_ago_among_many_issued_stay_quiet(istiod_server: ProgrammableServer) -> None:
    istiod_server.answer("/metrics", ca_counters(requests=1000, issued=995, sign_errors=5))

    assert [f for f in run_certs(snapshot(), istiod=[istiod_server.url]) if f.code == "MB3020"] == []


# -- security ----------------------------------------------------------------------------

@pytest.mark.envoy
def test_findings_never_carry_private_key_material(envoy_with_cert: Callable[..., RunningEnvoy]) -> None:
    now = datetime.now(timezone.utc)
    root = root_ca(not_after=now - timedelta(hours=1))
    intermediate = mint("Intermediate CA", issuer=root, is_ca=True, days=3)
    served = mint("shop.example.com", issuer=intermediate, dns_names=("shop.example.com",), days=5)
    leaf = workload_cert(intermediate, days=2)
    proxy = envoy_with_cert(leaf.cert_pem, leaf.key_pem, root.cert_pem)
    # Raw Secrets as a careless source would hand them over: keys still in, one even inside tls.crt.
    cluster = snapshot(
        secret(ISTIO, "cacerts", ca_cert_pem=intermediate.cert_pem, ca_key_pem=intermediate.key_pem,
               root_cert_pem=root.cert_pem, cert_chain_pem=intermediate.cert_pem + root.cert_pem),
        secret(ISTIO, "istio-ca-secret", ca_cert_pem=root.cert_pem, ca_key_pem=root.key_pem),
        secret(ISTIO, "shop-example-com-tls", tls_crt=served.cert_pem + served.key_pem, tls_key=served.key_pem),
        root_configmap(ISTIO, root), root_configmap("legacy", root_ca()),
        ingress_gateway("shop-example-com-tls"))

    findings = run_certs(cluster, envoys={WORKLOAD: proxy.admin_url}, now=now)
    emitted = json.dumps([f.to_dict() for f in findings])

    assert {"MB3001", "MB3002", "MB3010"} <= set(codes_of(findings))
    assert "PRIVATE KEY" not in emitted
    for minted in (root, intermediate, served, leaf):
        for secret_form in key_forms(minted):
            assert secret_form not in emitted


def key_forms(minted: Minted) -> list[str]:
    """The ways a private key could leak: PEM lines, base64 of the PEM, the DER and the scalar in hex."""
    der = minted.key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
    pem_lines = [line for line in minted.key_pem.splitlines() if "-----" not in line and len(line) > 16]
    return [*pem_lines, b64(minted.key_pem)[:40], der.hex()[:40], base64.b64encode(der).decode()[:40],
            format(minted.key.private_numbers().private_value, "x")]


def parse_fingerprint(minted: Minted) -> str:
    return minted.cert.fingerprint(minted.cert.signature_hash_algorithm).hex(":").upper()



# -- which CA istiod uses: cacerts layouts in istiod's order (pilot/pkg/bootstrap/istio_ca.go) ---------------

def secret_with(namespace: str, name: str, files: Mapping[str, str]) -> dict[str, Any]:
    """A Secret with data keys named exactly as given (``ca.crt``, ``istio-generated``)."""
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
            "data": {key: b64(value) for key, value in files.items()}}


def tls_cacerts(intermediate: Minted, root: Minted) -> dict[str, Any]:
    """cacerts in the kubernetes.io/tls layout, as cert-manager writes it."""
    return secret_with(ISTIO, "cacerts", {"tls.crt": intermediate.cert_pem, "tls.key": intermediate.key_pem,
                                          "ca.crt": root.cert_pem})


def istio_cacerts(intermediate: Minted, *roots: Minted, with_root_file: bool = True) -> dict[str, Any]:
    """cacerts in Istio's layout (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem)."""
    files = {"ca-cert.pem": intermediate.cert_pem, "ca-key.pem": intermediate.key_pem,
             "cert-chain.pem": intermediate.cert_pem + roots[0].cert_pem}
    if with_root_file:
        files["root-cert.pem"] = "".join(r.cert_pem for r in roots)
    return secret_with(ISTIO, "cacerts", files)


def test_tls_layout_cacerts_is_the_mesh_ca_and_namespaces_holding_its_root_match() -> None:
    root, leftover = root_ca(), root_ca()
    intermediate = mint("Intermediate CA", issuer=root, is_ca=True, days=20)
    cluster = snapshot(tls_cacerts(intermediate, root), secret(ISTIO, "istio-ca-secret", ca_cert_pem=leftover.cert_pem),
                       root_configmap(ISTIO, root), root_configmap("prod", root), root_configmap("shop", root))

    findings = run_certs(cluster)

    assert codes_of(findings) == ["MB3003"]
    finding = findings[0]
    assert finding.origin == f"Secret {ISTIO}/cacerts"
    assert finding.message.startswith('Mesh CA certificate "CN=Intermediate CA"')
    assert "tls.crt, tls.key and the chain" in finding.remediation.summary
    assert "--type=kubernetes.io/tls --from-file=tls.crt --from-file=tls.key --from-file=ca.crt" in \
        finding.remediation.command


def test_tls_layout_cacerts_still_flags_a_namespace_with_a_foreign_root() -> None:
    root, foreign = root_ca(), root_ca()
    intermediate = mint("Intermediate CA", issuer=root, is_ca=True)
    cluster = snapshot(tls_cacerts(intermediate, root), root_configmap(ISTIO, root), root_configmap("legacy", foreign))

    finding = only(run_certs(cluster), "MB3010")

    assert finding.origin == "ConfigMap legacy/istio-ca-root-cert"
    assert parse_fingerprint(root) in finding.message


def test_tls_crt_makes_istiod_use_ca_crt_even_when_istio_layout_files_are_there_too() -> None:
    root, stale = root_ca(), root_ca()
    intermediate = mint("Intermediate CA", issuer=root, is_ca=True)
    both = secret_with(ISTIO, "cacerts", {"tls.crt": intermediate.cert_pem, "ca.crt": root.cert_pem,
                                          "root-cert.pem": stale.cert_pem, "ca-cert.pem": stale.cert_pem})

    assert run_certs(snapshot(both, root_configmap(ISTIO, root), root_configmap("prod", root))) == []


def test_cacerts_without_root_cert_pem_is_incomplete_and_takes_the_root_from_the_top_of_the_chain() -> None:
    root = root_ca(days=20)
    intermediate = mint("Intermediate CA", issuer=root, is_ca=True)
    cluster = snapshot(istio_cacerts(intermediate, root, with_root_file=False),
                       root_configmap(ISTIO, root), root_configmap("prod", root))

    findings = run_certs(cluster)

    incomplete = only(findings, "MB3016")
    assert incomplete.level is Level.ERROR
    assert incomplete.message == ("cacerts in istio-system lacks root-cert.pem (Istio layout); istiod refuses an "
                                  "incomplete bundle and cannot start its CA")
    assert incomplete.evidence["roots_taken_from"] == "the self-signed top of ca-cert.pem + cert-chain.pem"
    assert incomplete.remediation.command == "kubectl -n istio-system describe secret cacerts"
    assert "MB3010" not in codes_of(findings)  # the intermediate is not mistaken for the root
    root_expiry = only(findings, "MB3003")
    assert root_expiry.message.startswith('Mesh root CA "CN=Istio CA,O=cluster.local"')


def test_complete_istio_layout_cacerts_is_not_reported_incomplete() -> None:
    root = root_ca()
    intermediate = mint("Intermediate CA", issuer=root, is_ca=True)

    assert run_certs(snapshot(istio_cacerts(intermediate, root), root_configmap(ISTIO, root),
                              root_configmap("prod", root))) == []


def test_expiring_plugged_in_root_says_to_rotate_with_both_roots_trusted() -> None:
    root = root_ca(days=5)
    intermediate = mint("Intermediate CA", issuer=root, is_ca=True, days=4)
    cluster = snapshot(istio_cacerts(intermediate, root), root_configmap(ISTIO, root))

    root_finding = next(f for f in run_certs(cluster) if f.message.startswith("Mesh root CA"))

    summary = root_finding.remediation.summary
    assert "1) Put the new root next to the old one in root-cert.pem" in summary
    assert "ISTIO_MULTIROOT_MESH=true" in summary and "3) Remove the old root" in summary
    assert "delete" not in root_finding.remediation.command


def test_leftover_istio_ca_secret_is_not_the_mesh_root_when_cacerts_is_complete() -> None:
    now = datetime.now(timezone.utc)
    root, leftover = root_ca(), root_ca(not_after=now - timedelta(days=3))
    intermediate = mint("Intermediate CA", issuer=root, is_ca=True)
    cluster = snapshot(istio_cacerts(intermediate, root), secret(ISTIO, "istio-ca-secret", ca_cert_pem=leftover.cert_pem),
                       root_configmap(ISTIO, root), root_configmap("prod", root))

    findings = run_certs(cluster, now=now)

    unused = only(findings, "MB3017")
    assert unused.level is Level.INFO
    assert unused.origin == f"Secret {ISTIO}/istio-ca-secret"
    assert "expired 3 days ago, but istiod does not use it: it signs with plugged-in CA (cacerts)" in unused.message
    assert codes_of(findings) == ["MB3017"]


def test_leftover_istio_ca_secret_that_is_healthy_says_nothing() -> None:
    root = root_ca()
    intermediate = mint("Intermediate CA", issuer=root, is_ca=True)
    cluster = snapshot(istio_cacerts(intermediate, root), secret(ISTIO, "istio-ca-secret", ca_cert_pem=root_ca().cert_pem),
                       root_configmap(ISTIO, root))

    assert run_certs(cluster) == []


def test_istio_generated_cacerts_is_istiods_self_signed_ca_renewed_by_the_rotator() -> None:
    root = root_ca(days=10)
    generated = secret_with(ISTIO, "cacerts", {"ca-cert.pem": root.cert_pem, "ca-key.pem": root.key_pem,
                                               "root-cert.pem": root.cert_pem, "istio-generated": ""})

    finding = only(run_certs(snapshot(generated, root_configmap(ISTIO, root))), "MB3003")

    assert finding.origin == f"Secret {ISTIO}/cacerts"
    assert "re-issues ca-cert.pem in cacerts" in finding.remediation.summary
    assert "CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL=10m" in finding.remediation.command


def test_rotator_grace_period_in_the_command_covers_a_short_lived_root() -> None:
    now = datetime.now(timezone.utc)
    short = root_ca(not_before=now - timedelta(days=75), not_after=now + timedelta(days=25))

    finding = only(run_certs(snapshot(secret(ISTIO, "istio-ca-secret", ca_cert_pem=short.cert_pem)), now=now),
                   "MB3003")

    # 25 of 100 days left: the default 20% window has not opened, so the command asks for 26%.
    assert finding.remediation.command.endswith("CITADEL_SELF_SIGNED_ROOT_CERT_GRACE_PERIOD_PERCENTILE=26")


# -- trust bundles with several roots (root rotation) -----------------------------------------------------------

def test_expired_old_root_next_to_a_valid_new_root_is_info_not_error() -> None:
    now = datetime.now(timezone.utc)
    old, new = root_ca(not_after=now - timedelta(days=2)), root_ca(days=3650)
    cluster = snapshot(root_configmap(ISTIO, old, new), root_configmap("prod", old, new))

    findings = run_certs(cluster, now=now)

    assert codes_of(findings) == ["MB3018"]
    finding = findings[0]
    assert finding.level is Level.INFO
    assert finding.message.startswith('Mesh root CA "CN=Istio CA,O=cluster.local" expired 2 days ago, but the '
                                      "trust bundle also holds CN=Istio CA,O=cluster.local (valid until ")
    assert finding.message.endswith("remove the old root after the rotation completes")


def test_truly_expired_single_root_is_still_error() -> None:
    now = datetime.now(timezone.utc)
    old = root_ca(not_after=now - timedelta(days=2))

    finding = only(run_certs(snapshot(root_configmap(ISTIO, old), root_configmap("prod", old)), now=now), "MB3001")

    assert finding.level is Level.ERROR
    assert finding.message.startswith('Mesh root CA "CN=Istio CA,O=cluster.local" expired 2 days ago')


def test_expired_old_root_is_info_once_the_intermediate_chains_to_the_new_root() -> None:
    now = datetime.now(timezone.utc)
    old, new = root_ca(not_after=now - timedelta(hours=5)), root_ca(days=3650)
    intermediate = mint("Intermediate CA", issuer=new, is_ca=True)
    cluster = snapshot(istio_cacerts(intermediate, new, old), root_configmap(ISTIO, old, new))

    assert codes_of(run_certs(cluster, now=now)) == ["MB3018"]


def test_expired_root_that_still_signs_the_intermediate_is_error_despite_a_new_root_in_the_bundle() -> None:
    now = datetime.now(timezone.utc)
    old, new = root_ca(not_after=now - timedelta(hours=5)), root_ca(days=3650)
    intermediate = mint("Intermediate CA", issuer=old, is_ca=True)
    cluster = snapshot(istio_cacerts(intermediate, old, new), root_configmap(ISTIO, old, new))

    finding = only(run_certs(cluster, now=now), "MB3001")

    assert finding.message.startswith('Mesh root CA "CN=Istio CA,O=cluster.local" expired 5 hours ago')


def test_namespace_copies_of_the_rotation_bundle_that_share_the_current_root_are_no_mismatch() -> None:
    old, new = root_ca(days=400), root_ca(days=3650)
    intermediate = mint("Intermediate CA", issuer=new, is_ca=True)
    cluster = snapshot(istio_cacerts(intermediate, new, old), root_configmap(ISTIO, old, new),
                       root_configmap("prod", new, old), root_configmap("shop", old, new))

    assert run_certs(cluster) == []


def test_namespace_copy_with_only_the_old_root_is_a_mismatch_when_the_new_root_signs() -> None:
    old, new = root_ca(days=400), root_ca(days=3650)
    intermediate = mint("Intermediate CA", issuer=new, is_ca=True)
    cluster = snapshot(istio_cacerts(intermediate, new, old), root_configmap(ISTIO, old, new),
                       root_configmap("legacy", old))

    finding = only(run_certs(cluster), "MB3010")

    assert finding.origin == "ConfigMap legacy/istio-ca-root-cert"
    assert finding.evidence["expected_fingerprints"] == [parse_fingerprint(new)]


def test_namespace_copy_lacking_one_valid_root_of_the_bundle_is_a_warning() -> None:
    old, new = root_ca(days=400), root_ca(days=3650)
    cluster = snapshot(root_configmap(ISTIO, old, new), root_configmap("prod", old))

    finding = only(run_certs(cluster), "MB3019")

    assert finding.level is Level.WARNING
    assert finding.origin == "ConfigMap prod/istio-ca-root-cert"
    assert parse_fingerprint(new) in finding.message


# -- key material -------------------------------------------------------------------------------------------------

def test_no_finding_of_any_cacerts_layout_carries_key_material() -> None:
    now = datetime.now(timezone.utc)
    old, new = root_ca(not_after=now - timedelta(hours=1)), root_ca(days=5)
    intermediate = mint("Intermediate CA", issuer=new, is_ca=True, days=3)
    scenarios = [
        snapshot(tls_cacerts(intermediate, new), secret(ISTIO, "istio-ca-secret", ca_cert_pem=old.cert_pem,
                                                        ca_key_pem=old.key_pem), root_configmap("prod", old)),
        snapshot(istio_cacerts(intermediate, new, old, with_root_file=False), root_configmap(ISTIO, new)),
        snapshot(istio_cacerts(intermediate, new, old), root_configmap(ISTIO, old, new), root_configmap("shop", old)),
        snapshot(secret_with(ISTIO, "cacerts", {"ca-cert.pem": new.cert_pem + new.key_pem, "ca-key.pem": new.key_pem,
                                                "istio-generated": ""})),
    ]

    for cluster in scenarios:
        findings = run_certs(cluster, now=now)
        emitted = json.dumps([f.to_dict() for f in findings])
        assert findings and "PRIVATE KEY" not in emitted
        for minted in (old, new, intermediate):
            for secret_form in key_forms(minted):
                assert secret_form not in emitted


def test_public_secret_keeps_certificates_and_the_istio_generated_marker_but_no_key() -> None:
    root = root_ca()
    generated = secret_with(ISTIO, "cacerts", {"ca-cert.pem": root.cert_pem, "ca-key.pem": root.key_pem,
                                               "tls.key": root.key_pem, "istio-generated": "x"})

    kept = public_secret(generated)

    assert kept["data"] == {"ca-cert.pem": b64(root.cert_pem), "istio-generated": ""}


def test_cacerts_without_root_file_or_self_signed_chain_top_compares_namespaces_with_the_published_root() -> None:
    root = root_ca()
    intermediate = mint("Intermediate CA", issuer=root, is_ca=True)
    chain_only = secret_with(ISTIO, "cacerts", {"ca-cert.pem": intermediate.cert_pem,
                                                "cert-chain.pem": intermediate.cert_pem})
    cluster = snapshot(chain_only, root_configmap(ISTIO, root), root_configmap("prod", root))

    findings = run_certs(cluster)

    assert codes_of(findings) == ["MB3016"]
    assert only(findings, "MB3016").evidence["roots_taken_from"] == f"ConfigMap {ISTIO}/istio-ca-root-cert"


def test_tls_layout_cacerts_without_ca_crt_is_incomplete() -> None:
    root = root_ca()
    intermediate = mint("Intermediate CA", issuer=root, is_ca=True)
    no_roots = secret_with(ISTIO, "cacerts", {"tls.crt": intermediate.cert_pem, "tls.key": intermediate.key_pem})

    finding = only(run_certs(snapshot(no_roots, root_configmap(ISTIO, root))), "MB3016")

    assert finding.message.startswith("cacerts in istio-system lacks ca.crt (kubernetes.io/tls layout)")
