"""commands.authz decides requests the way a real Envoy does with the RBAC filters istiod builds.

The policies and the filters are Istio's own builder testdata (tests/data/authz/istio-builder/):
a real Envoy runs each case's filters in front of a direct response, plaintext requests (and
mTLS requests from clients holding SPIFFE certificates) go through it, and every 403 or 200
must be what ``decide`` says for the same policies.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
import yaml

from commands.authz.evaluate import Caller, Request, TrustDomains, Verdict, Workload, decide, selecting_policies
from commands.authz.policy import policies_in
from tests.support.analysis import snapshot_from_yaml
from tests.support.certs import Minted, mint
from tests.support.envoy import start_envoy

DATA = Path(__file__).resolve().parent.parent / "data" / "authz" / "istio-builder"
HTTPBIN = Workload("foo", {"app": "httpbin", "version": "v1"})
# Plaintext from the test over loopback with no JWT: principal and namespace matches never match.
PLAINTEXT = Caller(mtls=False, request_principal="", ip="127.0.0.1")

# builder_test.go: case -> the filters istiod builds, in filter-chain order.
CASES = {
    "allow-empty-rule": ["allow-empty-rule-out"],
    "allow-nil-rule": ["allow-nil-rule-out"],
    "deny-empty-rule": ["deny-empty-rule-out"],
    "allow-path": ["allow-path-out"],
    "deny-and-allow": ["deny-and-allow-out1", "deny-and-allow-out2"],
    "dry-run-allow": ["dry-run-allow-out"],
    "dry-run-allow-and-deny": ["dry-run-allow-and-deny-out1", "dry-run-allow-and-deny-out2"],
    "dry-run-mix": ["dry-run-mix-out"],
    "audit-full-rule": ["audit-full-rule-out"],
    "multiple-policies": ["multiple-policies-out"],
    "single-policy": ["single-policy-out"],
    "allow-full-rule": ["allow-full-rule-out"],
}
REQUESTS = [("GET", "/", {}), ("GET", "/allow", {}), ("GET", "/another", {}), ("POST", "/deny", {}),
            ("GET", "/exact", {}), ("GET", "/prefix/a", {}), ("DELETE", "/a/suffix", {}),
            ("GET", "/path/template/x", {}), ("PUT", "/v1", {}), ("PATCH", "/v3", {}),
            ("PATCH", "/v3", {"X-abc": "abc2"}), ("PATCH", "/v3", {"X-abc": "other"})]


def envoy_config(filters: list[dict]) -> dict:
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                 "HttpConnectionManager",
        "stat_prefix": "inbound_0.0.0.0_80",
        "route_config": {"virtual_hosts": [{"name": "inbound", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}]},
        "http_filters": [*filters, {"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    address = {"socket_address": {"address": "127.0.0.1", "port_value": 0}}
    return {"admin": {"address": address}, "static_resources": {"listeners": [{
        "name": "http", "address": address, "filter_chains": [{"filters": [
            {"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}]}]}}


@pytest.mark.parametrize("case", sorted(CASES))
def test_decisions_match_envoy_running_istiods_rbac_filters(case, envoy_binary, tmp_path):
    filters = [yaml.safe_load((DATA / f"{name}.yaml").read_text()) for name in CASES[case]]
    policies = selecting_policies(policies_in(snapshot_from_yaml((DATA / f"{case}-in.yaml").read_text())),
                                  HTTPBIN, "istio-system")
    envoy = start_envoy(envoy_binary, tmp_path / case, envoy_config(filters))
    try:
        seen = {}
        port = envoy.listener_ports["http"]
        for method, path, headers in REQUESTS:
            status = httpx.request(method, envoy.http_url + path, headers=headers, timeout=5).status_code
            request = Request(port=port, method=method, path=path, host=f"127.0.0.1:{port}", headers=headers)
            verdict = decide(policies, PLAINTEXT, request, TrustDomains()).verdict
            seen[(method, path, tuple(headers.items()))] = (status, verdict)
    finally:
        envoy.stop()
    expected = {Verdict.ALLOWED: 200, Verdict.DENIED: 403}
    assert {k: s for k, (s, _) in seen.items()} == {k: expected.get(v) for k, (_, v) in seen.items()}


# -- mTLS callers: principals and trust domains against the peer certificate's SPIFFE URI ------------------------

# builder_test.go: case -> (filters, the trust-domain bundle istiod built them with).
MTLS_CASES = {
    "trust-domains": (["trust-domains-out"], TrustDomains()),
    "td-aliases-source-principal": (["td-aliases-source-principal-out"],
                                    TrustDomains("new-td", ("old-td", "some-trustdomain"))),
    "deny-and-allow": (["deny-and-allow-out1", "deny-and-allow-out2"], TrustDomains()),
}
IDENTITIES = [("cluster.local", "prod", "web"), ("another.local", "prod", "web"), ("bad.example", "prod", "web"),
              ("untrusted", "prod", "web"), ("other.td", "prod", "web"), ("new-td", "istio-system", "gw"),
              ("old-td", "istio-system", "gw"), ("some-trustdomain", "foo", "prefix-td")]


def mtls_config(filters: list[dict], workdir: Path, server: Minted, ca: Minted) -> dict:
    config = envoy_config(filters)
    files = {name: workdir / name for name in ("server.pem", "server-key.pem", "ca.pem")}
    for (name, path), text in zip(files.items(), (server.cert_pem, server.key_pem, ca.cert_pem)):
        path.write_text(text)
    config["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = {
        "name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_certificates": [{"certificate_chain": {"filename": str(files["server.pem"])},
                                      "private_key": {"filename": str(files["server-key.pem"])}}],
                "validation_context": {"trusted_ca": {"filename": str(files["ca.pem"])}}}}}
    return config


def call_as(url: str, workdir: Path, client: Minted) -> int:
    cert, key = workdir / "client.pem", workdir / "client-key.pem"
    cert.write_text(client.cert_pem)
    key.write_text(client.key_pem)
    context = ssl.create_default_context(cafile=str(workdir / "ca.pem"))
    context.check_hostname = False  # the listener is reached by IP; the chain is still verified
    context.load_cert_chain(str(cert), str(key))
    return httpx.get(url, verify=context, timeout=5).status_code


@pytest.mark.parametrize("case", sorted(MTLS_CASES))
def test_mtls_decisions_match_envoy_on_the_peer_spiffe_identity(case, envoy_binary, tmp_path):
    names, trust = MTLS_CASES[case]
    filters = [yaml.safe_load((DATA / f"{name}.yaml").read_text()) for name in names]
    policies = selecting_policies(policies_in(snapshot_from_yaml((DATA / f"{case}-in.yaml").read_text())),
                                  HTTPBIN, "istio-system")
    ca = mint("mesh-root", is_ca=True)
    workdir = tmp_path / case
    workdir.mkdir()
    envoy = start_envoy(envoy_binary, workdir, mtls_config(filters, workdir, mint("httpbin", issuer=ca), ca))
    try:
        url = f"https://127.0.0.1:{envoy.listener_ports['http']}/"
        seen = {}
        for domain, namespace, account in IDENTITIES:
            client = mint(account, issuer=ca, uris=(f"spiffe://{domain}/ns/{namespace}/sa/{account}",))
            caller = Caller(namespace, account, trust_domain=domain, request_principal="", ip="127.0.0.1")
            verdict = decide(policies, caller, Request(method="GET", path="/", headers={}), trust).verdict
            seen[domain, namespace, account] = (call_as(url, workdir, client), verdict)
    finally:
        envoy.stop()
    expected = {Verdict.ALLOWED: 200, Verdict.DENIED: 403}
    assert {k: s for k, (s, _) in seen.items()} == {k: expected.get(v) for k, (_, v) in seen.items()}
