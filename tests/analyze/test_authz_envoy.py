"""commands.authz decides requests the way a real Envoy does with the RBAC filters istiod builds.

The policies and the filters are Istio's own builder testdata (tests/data/authz/istio-builder/):
a real Envoy runs each case's filters in front of a direct response, plaintext requests go
through it, and every 403 or 200 must be what ``decide`` says for the same policies.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from commands.authz.evaluate import Caller, Request, TrustDomains, Verdict, Workload, decide, selecting_policies
from commands.authz.policy import policies_in
from tests.support.analysis import snapshot_from_yaml
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
