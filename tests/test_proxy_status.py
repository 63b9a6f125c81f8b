"""proxy-status against a real HTTP server answering like istiod's /debug/syncz."""

from __future__ import annotations

import socket

import pytest

from commands.checks.registry import CheckContext, run_check
from commands.cluster.endpoints import EndpointResolver
from commands.clients.http import http_endpoint
from commands.checks.proxy_status import SyncState, sync_state
from commands.report import report_order
from tests.support.analysis import snapshot_from_yaml
from tests.support.istiod import syncz_entry

ISTIOD_POD = """
apiVersion: v1
kind: Pod
metadata: {name: istiod-1, namespace: istio-system, labels: {app: istiod}}
spec:
  containers: [{name: discovery, image: "docker.io/istio/pilot:1.22.3"}]
status: {phase: Running}
"""


def run_proxy_status(urls: list[str], *, namespace: str | None = None, pods: str = ISTIOD_POD):
    resolver = EndpointResolver(http=http_endpoint, istiod_urls=urls)
    ctx = CheckContext(snapshot=snapshot_from_yaml(pods), endpoints=resolver, namespace=namespace)
    return report_order(run_check("proxy-status", ctx))


@pytest.mark.parametrize("sent, acked, expected", [
    (None, None, SyncState.NOT_SENT),
    ("n1", "n1", SyncState.SYNCED),
    ("n2", None, SyncState.NEVER_ACKNOWLEDGED),
    ("n2", "n1", SyncState.STALE),
])
def test_sync_state_follows_istioctl_rule(sent, acked, expected):
    assert sync_state(sent, acked) == expected


def test_summary_comes_first_and_counts_each_proxy_once(istiod_server):
    istiod_server.answer("/debug/syncz", [
        syncz_entry("a-1.prod"),
        syncz_entry("b-1.prod", cluster_sent="n2", cluster_acked="n1"),
        syncz_entry("c-1.prod", synced=False, endpoint_sent="e", endpoint_acked="e"),
    ])
    findings = run_proxy_status([istiod_server.url])
    assert findings[0].code == "MB2000"
    assert findings[0].message == "1 synced, 1 stale, 1 not sent (3 proxies across 1 istiod)"


def test_stale_proxy_is_a_warning_naming_the_stale_types(istiod_server):
    istiod_server.answer("/debug/syncz", [syncz_entry("b-1.prod", cluster_sent="n2", cluster_acked="n1",
                                                      route_sent="r2", route_acked="r1")])
    [stale] = [f for f in run_proxy_status([istiod_server.url]) if f.code == "MB2001"]
    assert stale.level == "Warning"
    assert stale.origin == "Pod prod/b-1"
    assert "CDS/RDS" in stale.message
    assert stale.evidence["nonces"]["CDS"] == {"sent": "n2", "acked": "n1"}


def test_never_acknowledged_config_is_an_error(istiod_server):
    istiod_server.answer("/debug/syncz", [syncz_entry("p-1.prod", synced=False, cluster_sent="c1",
                                                      listener_sent="l1")])
    codes = [f.code for f in run_proxy_status([istiod_server.url])]
    assert "MB2002" in codes
    assert "MB2003" not in codes  # CDS and LDS were sent, just never acked


def test_routes_and_extension_configs_never_sent_are_normal(istiod_server):
    entry = syncz_entry("gw-1.istio-system", synced=False, cluster_sent="c", cluster_acked="c",
                        listener_sent="l", listener_acked="l")
    istiod_server.answer("/debug/syncz", [entry])
    findings = run_proxy_status([istiod_server.url])
    assert [f.code for f in findings] == ["MB2000"]
    assert findings[0].message.startswith("1 synced")


def test_proxy_without_clusters_or_listeners_is_not_sent_warning(istiod_server):
    istiod_server.answer("/debug/syncz", [syncz_entry("o-1.prod", synced=False)])
    [not_sent] = [f for f in run_proxy_status([istiod_server.url]) if f.code == "MB2003"]
    assert "CDS/LDS" in not_sent.message


def test_proxy_version_differing_from_istiod_image_is_flagged(istiod_server):
    istiod_server.answer("/debug/syncz", [syncz_entry("old-1.prod", version="1.21.2"),
                                          syncz_entry("new-1.prod", version="1.22.3-distroless")])
    mismatches = [f for f in run_proxy_status([istiod_server.url]) if f.code == "MB2004"]
    assert [f.origin for f in mismatches] == ["Pod prod/old-1"]
    assert "1.21.2" in mismatches[0].message and "1.22.3" in mismatches[0].message


def test_namespace_filter_keeps_only_that_namespaces_proxies(istiod_server):
    istiod_server.answer("/debug/syncz", [syncz_entry("a-1.prod", cluster_sent="2", cluster_acked="1"),
                                          syncz_entry("b-1.dev", cluster_sent="2", cluster_acked="1")])
    findings = run_proxy_status([istiod_server.url], namespace="dev")
    assert [f.origin for f in findings if f.code == "MB2001"] == ["Pod dev/b-1"]
    assert findings[0].evidence["proxies"] == 1


def test_entries_from_every_istiod_are_merged(istiod_server):
    from tests.support.http_server import start_server

    other, server = start_server()
    try:
        istiod_server.answer("/debug/syncz", [syncz_entry("a-1.prod")])
        other.answer("/debug/syncz", [syncz_entry("b-1.prod")])
        findings = run_proxy_status([istiod_server.url, other.url])
    finally:
        server.shutdown()
    assert findings[0].message == "2 synced, 0 stale, 0 not sent (2 proxies across 2 istiod)"


def test_istiod_answering_500_is_an_unreachable_finding_not_a_traceback(istiod_server):
    istiod_server.answer("/debug/syncz", "boom", status=500)
    [finding] = run_proxy_status([istiod_server.url])
    assert finding.code == "MB2005"
    assert "HTTP 500" in finding.message


def test_istiod_answering_non_json_is_reported(istiod_server):
    istiod_server.answer("/debug/syncz", "<html>login</html>")
    [finding] = run_proxy_status([istiod_server.url])
    assert finding.code == "MB2005" and "not JSON" in finding.message


def test_istiod_refusing_connections_is_reported():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    [finding] = run_proxy_status([f"http://127.0.0.1:{port}"])
    assert finding.code == "MB2005" and "connection failed" in finding.message


def test_without_any_istiod_the_check_says_it_was_skipped():
    ctx = CheckContext(snapshot=snapshot_from_yaml(""), endpoints=EndpointResolver(http=http_endpoint))
    [finding] = run_check("proxy-status", ctx)
    assert finding.code == "MB0004" and "no running istiod" in finding.message
