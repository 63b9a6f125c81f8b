"""N proxies rejecting the same push are one cause naming the resource that produced it (MB2012).

The rejection is the one captured from istiod 1.24's /debug/syncz (tests/data/syncz/istiod-1.24/nack.json): an
EnvoyFilter inserting an HTTP filter the proxies' Envoy does not have.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from commands.catalog import default_checks
from commands.checks.registry import CheckContext
from commands.clients.http import http_endpoint
from commands.cluster.endpoints import EndpointResolver
from commands.report import report_order
from commands.triage import triage
from tests.support.analysis import snapshot_from_yaml
from tests.support.istiod import istiod_pod_yaml

CHECKS = default_checks()
NACK = json.loads((Path(__file__).resolve().parent / "data" / "syncz" / "istiod-1.24" / "nack.json").read_text())[1]
ISTIOD_POD = istiod_pod_yaml("1.24.2")
CUSTOM_AUTH_FILTER = """
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: custom-auth, namespace: bookinfo}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_INBOUND, listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager}}}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.custom_auth
        typed_config: {"@type": type.googleapis.com/udpa.type.v1.TypedStruct, type_url: acme.auth.v1.Config}
"""
UNRELATED_FILTER = """
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: lua-headers, namespace: bookinfo}
spec:
  workloadSelector: {labels: {app: reviews}}
  configPatches:
  - applyTo: HTTP_FILTER
    patch: {operation: INSERT_BEFORE, value: {name: envoy.filters.http.lua}}
"""


def pod(name: str, app: str) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: bookinfo, labels: {{app: {app}}}}}
spec: {{containers: [{{name: istio-proxy, image: "docker.io/istio/proxyv2:1.24.2"}}]}}
status: {{phase: Running}}
"""


PODS = {"reviews-v2-5b64f5c8d6-xk2lp": "reviews", "ratings-v1-7d9f8c6b5-q2w3e": "ratings",
        "details-v1-6c8d9f7b4-r5t6y": "details"}


def nacking(name: str, address: str = "10.244.1.7") -> dict:
    entry = copy.deepcopy(NACK)
    entry["proxy"] = f"{name}.bookinfo"
    listener = entry["resources"]["type.googleapis.com/envoy.config.listener.v3.Listener"]
    listener["lastError"] = listener["lastError"].replace("virtualInbound", f"virtualInbound {address}_15006")
    return entry


def run(server, entries, *documents: str):
    server.answer("/debug/syncz", entries)
    pods = "\n---\n".join([ISTIOD_POD, *(pod(n, a) for n, a in PODS.items()), *documents])
    ctx = CheckContext(snapshot=snapshot_from_yaml(pods),
                       endpoints=EndpointResolver(http=http_endpoint, istiod_urls=[server.url]))
    return report_order(CHECKS.run("proxy-status", ctx))


def test_three_proxies_rejecting_the_same_push_are_one_cause_naming_the_envoyfilter(istiod_server):
    entries = [nacking(name, f"10.244.1.{i}") for i, name in enumerate(PODS, 7)]
    findings = run(istiod_server, entries, CUSTOM_AUTH_FILTER, UNRELATED_FILTER)

    [grouped] = [f for f in findings if f.code == "MB2012"]
    assert grouped.origin == "EnvoyFilter bookinfo/custom-auth"
    assert grouped.message.startswith("3 proxies reject the same LDS config from istiod")
    assert "high confidence" in grouped.message and "envoy.filters.http.custom_auth" in grouped.message
    assert "No restart helps" in grouped.remediation.summary
    result = triage(findings)
    [cause] = [c for c in result.causes if c.finding.code == "MB2012" or c.finding.code == "MB2002"]
    assert cause.finding is grouped and len(cause.explains) == 3


def test_rejections_with_different_errors_are_not_grouped(istiod_server):
    other = nacking("details-v1-6c8d9f7b4-r5t6y")
    other["resources"]["type.googleapis.com/envoy.config.listener.v3.Listener"]["lastError"] = (
        "Error adding/updating listener(s) 0.0.0.0_9080: duplicate listener 0.0.0.0_9080 found")
    findings = run(istiod_server, [nacking("reviews-v2-5b64f5c8d6-xk2lp"), other])
    assert [f for f in findings if f.code == "MB2012"] == []
    assert len([f for f in findings if f.code == "MB2002"]) == 2


def test_one_rejection_is_attributed_when_the_producing_filter_is_in_the_snapshot(istiod_server):
    findings = run(istiod_server, [nacking("reviews-v2-5b64f5c8d6-xk2lp")], CUSTOM_AUTH_FILTER)
    [grouped] = [f for f in findings if f.code == "MB2012"]
    assert grouped.message.startswith("1 proxy rejects")


def test_a_filter_that_selects_only_some_of_the_rejecting_proxies_is_not_blamed(istiod_server):
    entries = [nacking(name) for name in PODS]
    findings = run(istiod_server, entries, UNRELATED_FILTER)
    [grouped] = [f for f in findings if f.code == "MB2012"]
    assert "not in the snapshot" in grouped.message
