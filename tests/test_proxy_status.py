"""proxy-status against a real HTTP server answering like istiod's /debug/syncz."""

from __future__ import annotations

import contextlib
import copy
import json
import socket
from pathlib import Path

import pytest

from commands.catalog import default_checks
from commands.checks.registry import CheckContext
from commands.checks.syncz import SyncState, parse_syncz, quote_envoy_error, sync_state
from commands.checks.versions import IstioVersion, Skew, parse_istiod_build, version_skew
from commands.clients.http import http_endpoint
from commands.cluster.endpoints import EndpointResolver
from commands.report import report_order
from tests.support.analysis import snapshot_from_yaml
from tests.support.istiod import istiod_pod_yaml, syncz_entry

CHECKS = default_checks()
SYNCZ = Path(__file__).resolve().parent / "data" / "syncz"

ISTIOD_POD = istiod_pod_yaml()


def run_proxy_status(urls: list[str], *, namespace: str | None = None, pods: str = ISTIOD_POD):
    resolver = EndpointResolver(http=http_endpoint, istiod_urls=urls)
    ctx = CheckContext(snapshot=snapshot_from_yaml(pods), endpoints=resolver, namespace=namespace)
    return report_order(CHECKS.run("proxy-status", ctx))


def load_syncz(name: str) -> list[dict]:
    return json.loads((SYNCZ / name).read_text())


def istiod_build(version: str) -> str:
    """istiod's :15014/version answer for ``version`` (tests/data/syncz/version-*.txt)."""
    return (SYNCZ / f"version-{version}.txt").read_text()


def serve(server, entries, version: str | None = None) -> None:
    server.answer("/debug/syncz", entries)
    if version:
        server.answer("/version", istiod_build(version))


def synced_entry(proxy: str, version: str) -> dict:
    """A fully synced 1.24 sidecar entry (productpage in nack.json) renamed and re-versioned."""
    entry = copy.deepcopy(load_syncz("istiod-1.24/nack.json")[0])
    entry.update(proxy=proxy, istio_version=version)
    return entry


def of_code(findings, code: str) -> list:
    return [f for f in findings if f.code == code]


def about(findings, origin: str) -> list:
    return [f for f in findings if f.origin == origin]


# -- istioctl's per-type rule -----------------------------------------------------------------------------

@pytest.mark.parametrize("sent, acked, last_error, expected", [
    (None, None, None, SyncState.NOT_SENT),
    ("n1", "n1", None, SyncState.SYNCED),
    ("n2", None, None, SyncState.NEVER_ACKNOWLEDGED),
    ("n2", "n1", None, SyncState.STALE),
    ("n2", "n1", "Error adding/updating listener(s) x: bad", SyncState.ERROR),
])
def test_sync_state_follows_istioctl_rule(sent, acked, last_error, expected):
    assert sync_state(sent, acked, last_error) == expected


# -- NACK (Istio 1.23+ lastError) ------------------------------------------------------------------------

def test_nacked_proxy_is_error_quoting_envoy_error(istiod_server):
    serve(istiod_server, load_syncz("istiod-1.24/nack.json"), version="1.24.2")
    [nack] = of_code(run_proxy_status([istiod_server.url]), "MB2002")
    assert nack.level == "Error"
    assert nack.origin == "Pod bookinfo/reviews-v2-5b64f5c8d6-xk2lp"
    assert ('Envoy says "Error adding/updating listener(s) virtualInbound: Didn\'t find a registered implementation '
            "for 'envoy.filters.http.custom_auth'") in nack.message
    assert nack.evidence["last_error"].startswith("Error adding/updating listener(s) virtualInbound")
    assert nack.evidence["types"]["LDS"]["acked"] == "0a1b2c3d-4e5f-4061-8273-948596a7b8c9"  # the old push


def test_nack_remediation_points_at_the_config_and_never_at_a_restart(istiod_server):
    serve(istiod_server, load_syncz("istiod-1.24/nack.json"), version="1.24.2")
    [nack] = of_code(run_proxy_status([istiod_server.url]), "MB2002")
    assert "Gateway, Sidecar or EnvoyFilter" in nack.remediation.summary
    assert "(Envoy listener virtualInbound)" in nack.remediation.summary
    assert "Do not restart" in nack.remediation.summary
    assert nack.remediation.command == ("kubectl -n bookinfo logs reviews-v2-5b64f5c8d6-xk2lp -c istio-proxy "
                                        "| grep -i rejected")


def test_synced_neighbour_of_a_nacked_proxy_stays_quiet(istiod_server):
    serve(istiod_server, load_syncz("istiod-1.24/nack.json"), version="1.24.2")
    findings = run_proxy_status([istiod_server.url])
    assert about(findings, "Pod bookinfo/productpage-v1-7d6cfb7dfd-9x8vz") == []
    assert of_code(findings, "MB2001") == []  # the NACKed listener is ERROR, not also STALE
    assert findings[0].message == "1 synced, 0 stale, 1 rejecting config, 0 not sent (2 proxies across 1 istiod)"


def test_rejected_cluster_points_at_the_destination_rule_of_its_host(istiod_server):
    entries = load_syncz("istiod-1.24/nack.json")
    cds = entries[1]["resources"]["type.googleapis.com/envoy.config.cluster.v3.Cluster"]
    cds["lastError"] = ("Error adding/updating cluster(s) outbound|9080|v3|ratings.bookinfo.svc.cluster.local: "
                        "Proto constraint validation failed (ClusterValidationError.LbPolicy: value must be one of "
                        "the defined enum values)")
    serve(istiod_server, entries, version="1.24.2")
    [nack] = of_code(run_proxy_status([istiod_server.url]), "MB2002")
    assert nack.message.split(" config istiod")[0].endswith("rejected the CDS/LDS")
    assert "DestinationRule, ServiceEntry or EnvoyFilter for host ratings.bookinfo.svc.cluster.local" in \
        nack.remediation.summary


def test_nack_error_is_trimmed_and_never_carries_key_material(istiod_server):
    entries = load_syncz("istiod-1.24/nack.json")
    lds = entries[1]["resources"]["type.googleapis.com/envoy.config.listener.v3.Listener"]
    lds["lastError"] = (
        "Error adding/updating listener(s) 0.0.0.0_8443: Invalid path: inline_string: \"hunter2-db-password\" "
        "authorization: Bearer eyJhbGciOiJSUzI1NiJ9.payload.sig -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0B"
        "AQEFAASCBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY----- " + "x " * 400)
    serve(istiod_server, entries, version="1.24.2")
    [nack] = of_code(run_proxy_status([istiod_server.url]), "MB2002")
    emitted = json.dumps(nack.to_dict())
    for secret in ("PRIVATE KEY", "MIIEvQIBADANBgkqhkiG9w0B", "hunter2", "eyJhbGciOiJSUzI1NiJ9"):
        assert secret not in emitted, secret
    assert len(nack.evidence["last_error"]) <= 300
    assert nack.evidence["last_error"].startswith("Error adding/updating listener(s) 0.0.0.0_8443: Invalid path")


def test_quoting_keeps_an_ordinary_envoy_error_verbatim():
    error = ("Error adding/updating cluster(s) outbound|9080||reviews.bookinfo.svc.cluster.local: "
             "duplicate cluster outbound|9080||reviews.bookinfo.svc.cluster.local found")
    assert quote_envoy_error(error) == error


# -- in-flight pushes ------------------------------------------------------------------------------------

def test_never_acknowledged_without_error_is_a_stale_warning_not_a_rejection(istiod_server):
    serve(istiod_server, load_syncz("istiod-1.24/in-flight.json"), version="1.24.2")
    findings = run_proxy_status([istiod_server.url])
    [stale] = of_code(findings, "MB2001")
    assert stale.level == "Warning"
    assert "CDS/LDS" in stale.message
    assert {t: v["state"] for t, v in stale.evidence["types"].items()} == {
        "CDS": "STALE (Never Acknowledged)", "LDS": "STALE (Never Acknowledged)"}
    assert of_code(findings, "MB2002") == [] and of_code(findings, "MB2003") == []
    assert "restart" not in stale.remediation.summary.lower()


def test_stale_proxy_is_a_warning_naming_the_stale_types(istiod_server):
    istiod_server.answer("/debug/syncz", [syncz_entry("b-1.prod", cluster_sent="n2", cluster_acked="n1",
                                                      route_sent="r2", route_acked="r1")])
    [stale] = of_code(run_proxy_status([istiod_server.url]), "MB2001")
    assert stale.level == "Warning"
    assert stale.origin == "Pod prod/b-1"
    assert "CDS/RDS" in stale.message
    assert stale.evidence["types"]["CDS"] == {"state": "STALE", "sent": "n2", "acked": "n1"}


# -- subscriptions: IGNORED is not NOT SENT --------------------------------------------------------------

def test_ztunnel_subscribed_only_to_workload_types_gets_no_finding(istiod_server):
    serve(istiod_server, load_syncz("istiod-1.24/ambient.json"), version="1.24.2")
    findings = run_proxy_status([istiod_server.url])
    assert [f.code for f in findings] == ["MB2000"]
    assert findings[0].message.startswith("2 synced, 0 stale, 0 rejecting config, 0 not sent")


def test_ztunnel_nack_is_an_error_that_never_suggests_restarting_ztunnel(istiod_server):
    entries = load_syncz("istiod-1.24/ambient.json")
    wds = entries[0]["resources"]["type.googleapis.com/istio.workload.Address"]
    wds["lastError"] = "unknown service resolution PASSTHROUGH in service default/external-db"
    serve(istiod_server, entries, version="1.24.2")
    findings = run_proxy_status([istiod_server.url])
    [nack] = about(findings, "Pod istio-system/ztunnel-7xk2p")
    assert nack.code == "MB2006" and nack.level == "Error"
    assert 'ztunnel says "unknown service resolution PASSTHROUGH' in nack.message
    assert "Leave the ztunnel pod running (no restart, no pod removal)" in nack.remediation.summary
    assert "delete" not in nack.remediation.command and "restart" not in nack.remediation.command
    assert of_code(findings, "MB2002") == []


def test_old_generation_ztunnel_without_xds_fields_is_ignored(istiod_server):
    serve(istiod_server, load_syncz("istiod-1.22/flat.json"), version="1.22.3")
    assert about(run_proxy_status([istiod_server.url]), "Pod istio-system/ztunnel-q2w3e") == []
    [ztunnel] = [p for p in parse_syncz(load_syncz("istiod-1.22/flat.json"), "istiod") if p.is_ztunnel]
    assert ztunnel.types == {}  # IGNORED, as istioctl before 1.22 printed it, not NOT SENT


def test_gateway_without_rds_is_synced(istiod_server):
    serve(istiod_server, load_syncz("istiod-1.24/gateway-no-rds.json"), version="1.24.2")
    findings = run_proxy_status([istiod_server.url])
    assert about(findings, "Pod istio-system/istio-ingressgateway-6b7f9c5d4-p8r2t") == []


def test_gateway_that_asked_for_listeners_and_got_none_is_not_sent(istiod_server):
    serve(istiod_server, load_syncz("istiod-1.24/gateway-no-rds.json"), version="1.24.2")
    [not_sent] = of_code(run_proxy_status([istiod_server.url]), "MB2003")
    assert not_sent.origin == "Pod istio-system/istio-egressgateway-58d9c6b7f-k3m9x"
    assert "istiod has not sent LDS" in not_sent.message  # RDS/EDS it never asked for are IGNORED


def test_proxy_with_no_subscriptions_on_a_1_24_istiod_is_not_reported_not_sent(istiod_server):
    serve(istiod_server, [{"cluster_id": "Kubernetes", "proxy": "fresh-1.prod", "proxy_type": "sidecar",
                           "istio_version": "1.24.2"}], version="1.24.2")
    assert of_code(run_proxy_status([istiod_server.url]), "MB2003") == []


def test_same_bare_entry_from_a_1_22_istiod_is_not_sent(istiod_server):
    serve(istiod_server, [{"cluster_id": "Kubernetes", "proxy": "fresh-1.prod", "proxy_type": "sidecar",
                           "istio_version": "1.22.3"}], version="1.22.3")
    [not_sent] = of_code(run_proxy_status([istiod_server.url]), "MB2003")
    assert "CDS/LDS" in not_sent.message


# -- old syncz generation (flat fields only) -------------------------------------------------------------

def test_old_generation_syncz_still_works(istiod_server):
    serve(istiod_server, load_syncz("istiod-1.22/flat.json"), version="1.22.3")
    findings = run_proxy_status([istiod_server.url])
    assert findings[0].message == "2 synced, 2 stale, 0 rejecting config, 1 not sent (5 proxies across 1 istiod)"
    assert [f.origin for f in of_code(findings, "MB2001")] == ["Pod bookinfo/ratings-v1-6c9f8d7b5-h7j3k",
                                                               "Pod bookinfo/reviews-v3-7886dd86b9-lt5c2"]
    assert [f.origin for f in of_code(findings, "MB2003")] == ["Pod bookinfo/legacy-batch-5d4c3b2a1-z9y8x"]
    assert of_code(findings, "MB2002") == []
    assert about(findings, "Pod bookinfo/details-v1-65cfcf56f9-2jq7m") == []


def test_old_istiod_stale_advice_says_it_cannot_report_rejections(istiod_server):
    serve(istiod_server, load_syncz("istiod-1.22/flat.json"), version="1.22.3")
    stale = of_code(run_proxy_status([istiod_server.url]), "MB2001")
    assert all("older than 1.23 and cannot report a rejection" in f.remediation.summary for f in stale)


def test_new_istiod_stale_advice_does_not_claim_it_hides_rejections(istiod_server):
    serve(istiod_server, load_syncz("istiod-1.24/in-flight.json"), version="1.24.2")
    [stale] = of_code(run_proxy_status([istiod_server.url]), "MB2001")
    assert "older than 1.23" not in stale.remediation.summary


def test_summary_comes_first_and_counts_each_proxy_once(istiod_server):
    istiod_server.answer("/debug/syncz", [
        syncz_entry("a-1.prod"),
        syncz_entry("b-1.prod", cluster_sent="n2", cluster_acked="n1"),
        syncz_entry("c-1.prod", synced=False, endpoint_sent="e", endpoint_acked="e"),
    ])
    findings = run_proxy_status([istiod_server.url])
    assert findings[0].code == "MB2000"
    assert findings[0].message == "1 synced, 1 stale, 0 rejecting config, 1 not sent (3 proxies across 1 istiod)"


def test_routes_and_extension_configs_never_sent_are_normal(istiod_server):
    entry = syncz_entry("gw-1.istio-system", synced=False, cluster_sent="c", cluster_acked="c",
                        listener_sent="l", listener_acked="l")
    istiod_server.answer("/debug/syncz", [entry])
    findings = run_proxy_status([istiod_server.url])
    assert [f.code for f in findings] == ["MB2000"]
    assert findings[0].message.startswith("1 synced")


def test_proxy_without_clusters_or_listeners_is_not_sent_warning(istiod_server):
    istiod_server.answer("/debug/syncz", [syncz_entry("o-1.prod", synced=False)])
    [not_sent] = of_code(run_proxy_status([istiod_server.url]), "MB2003")
    assert "CDS/LDS" in not_sent.message
    assert "delete" not in (not_sent.remediation.command or "")


# -- versions, judged per istiod ---------------------------------------------------------------------------

TWO_ISTIODS = """
apiVersion: v1
kind: Pod
metadata: {name: istiod-7b9c5d6f8-abcde, namespace: istio-system, labels: {app: istiod}}
spec:
  containers: [{name: discovery, image: "docker.io/istio/pilot:1.24.2"}]
status: {phase: Running}
---
apiVersion: v1
kind: Pod
metadata: {name: istiod-canary-6d8f7c5b9-fghij, namespace: istio-system, labels: {app: istiod}}
spec:
  containers: [{name: discovery, image: "docker.io/istio/pilot:1.25.0"}]
status: {phase: Running}
"""


def test_each_proxy_is_judged_against_the_istiod_it_is_connected_to(istiod_server, second_istiod):
    serve(istiod_server, [synced_entry("stable-1.prod", "1.23.3"), synced_entry("patch-1.prod", "1.24.1")],
          version="1.24.2")
    serve(second_istiod, [synced_entry("old-1.prod", "1.23.3"), synced_entry("canary-1.prod", "1.25.0")],
          version="1.25.0")
    findings = run_proxy_status([istiod_server.url, second_istiod.url], pods=TWO_ISTIODS)
    [unsupported] = of_code(findings, "MB2004")
    assert unsupported.origin == "Pod prod/old-1"
    assert "1.23.3" in unsupported.message and "1.25.0" in unsupported.message
    assert second_istiod.url in unsupported.message
    [behind] = of_code(findings, "MB2009")
    assert behind.origin == "Pod prod/stable-1" and behind.level == "Info"
    assert about(findings, "Pod prod/patch-1") == [] and about(findings, "Pod prod/canary-1") == []


def test_istiod_version_is_read_from_its_monitoring_port(istiod_server):
    serve(istiod_server, [synced_entry("a-1.prod", "1.24.2")], version="1.24.2")
    run_proxy_status([istiod_server.url])
    assert "/version" in [r.path for r in istiod_server.requests]


def test_proxy_newer_than_its_istiod_is_unsupported(istiod_server):
    serve(istiod_server, [synced_entry("new-1.prod", "1.25.0")], version="1.24.2")
    [unsupported] = of_code(run_proxy_status([istiod_server.url]), "MB2004")
    assert "may not be newer than its control plane" in unsupported.message
    assert "istio.io/rev" in unsupported.remediation.summary


def test_image_tag_is_the_fallback_when_istiod_has_no_version_endpoint(istiod_server):
    istiod_server.answer("/debug/syncz", [syncz_entry("old-1.prod", version="1.21.2"),
                                          syncz_entry("new-1.prod", version="1.22.3-distroless")])
    findings = run_proxy_status([istiod_server.url])
    [behind] = of_code(findings, "MB2009")
    assert behind.origin == "Pod prod/old-1"
    assert behind.evidence["istiod_version_source"] == "image tag shared by every istiod pod"
    assert of_code(findings, "MB2004") == []


def test_unknown_istiod_version_is_said_once_not_guessed(istiod_server):
    istiod_server.answer("/debug/syncz", [syncz_entry("a-1.prod"), syncz_entry("b-1.prod", version="1.10.0")])
    findings = run_proxy_status([istiod_server.url], pods=TWO_ISTIODS)  # pods disagree, /version absent
    [unknown] = of_code(findings, "MB2010")
    assert unknown.level == "Info" and "2 proxies" in unknown.message and "HTTP 404" in unknown.message
    assert of_code(findings, "MB2004") == [] and of_code(findings, "MB2009") == []


def test_ztunnel_version_skew_advises_a_node_by_node_upgrade_not_a_pod_delete(istiod_server):
    entries = load_syncz("istiod-1.24/ambient.json")
    entries[0]["istio_version"] = "1.22.3"
    serve(istiod_server, entries, version="1.24.2")
    [skew] = about(run_proxy_status([istiod_server.url]), "Pod istio-system/ztunnel-7xk2p")
    assert skew.code == "MB2008"
    assert "cordoned and drained" in skew.remediation.summary
    assert "delete" not in skew.remediation.command


class ForwardToFakes:
    """Port-forwards to istiod pods, each landing on its own fake istiod (the kube client is tested elsewhere)."""

    def __init__(self, urls: dict[str, str]):
        self.urls = urls

    @contextlib.contextmanager
    def forward(self, pod, port):
        assert port == 15014
        yield self.urls[pod.name]


def test_istiod_pods_on_two_versions_each_judge_their_own_proxies_by_image_tag(istiod_server, second_istiod):
    # No /version programmed: each pod's own image tag is the fallback, even though the pods disagree.
    istiod_server.answer("/debug/syncz", [syncz_entry("stable-1.prod", version="1.23.3")])
    listeners_never_sent = load_syncz("istiod-1.24/gateway-no-rds.json")[1]  # a 1.23+ shape: LDS asked, not sent
    listeners_never_sent.update(proxy="canary-1.prod", istio_version="1.23.3")
    second_istiod.answer("/debug/syncz", [listeners_never_sent])
    forwarder = ForwardToFakes({"istiod-7b9c5d6f8-abcde": istiod_server.url,
                                "istiod-canary-6d8f7c5b9-fghij": second_istiod.url})
    resolver = EndpointResolver(http=http_endpoint, port_forwarder=forwarder)
    ctx = CheckContext(snapshot=snapshot_from_yaml(TWO_ISTIODS), endpoints=resolver)
    findings = report_order(CHECKS.run("proxy-status", ctx))
    assert [f.origin for f in of_code(findings, "MB2009")] == ["Pod prod/stable-1"]
    [unsupported] = of_code(findings, "MB2004")
    assert unsupported.origin == "Pod prod/canary-1"
    assert unsupported.evidence["istiod_version_source"] == "image tag of istio-system/istiod-canary-6d8f7c5b9-fghij"
    [not_sent] = of_code(findings, "MB2003")
    assert not_sent.remediation.command == ("kubectl -n istio-system logs istiod-canary-6d8f7c5b9-fghij -c discovery "
                                            "| grep canary-1")


@pytest.mark.parametrize("text, expected", [
    ("1.24.2-3b0d1a2c4e5f60718293a4b5c6d7e8f901234567-Clean", IstioVersion(1, 24, 2)),
    ("1.25-alpha.9c900ba74d10a1affe7c23557ef0eebd6103b03c-9c900ba74d10a1affe7c23557ef0eebd6103b03c-Clean",
     IstioVersion(1, 25)),
    ("<html>not istiod</html>", None),
])
def test_istiod_build_string_parses_like_istioctl(text, expected):
    assert parse_istiod_build(text) == expected


@pytest.mark.parametrize("proxy, istiod, expected", [
    ("1.24.1", "1.24.2", Skew.SAME_MINOR),
    ("1.23.3", "1.24.2", Skew.ONE_MINOR_BEHIND),
    ("1.22.3", "1.24.2", Skew.UNSUPPORTED),
    ("1.25.0", "1.24.2", Skew.UNSUPPORTED),
])
def test_version_skew_follows_istio_supported_releases(proxy, istiod, expected):
    assert version_skew(IstioVersion.parse(proxy), IstioVersion.parse(istiod)) == expected


# -- reading istiod ----------------------------------------------------------------------------------------

def test_namespace_filter_keeps_only_that_namespaces_proxies(istiod_server):
    istiod_server.answer("/debug/syncz", [syncz_entry("a-1.prod", cluster_sent="2", cluster_acked="1"),
                                          syncz_entry("b-1.dev", cluster_sent="2", cluster_acked="1")])
    findings = run_proxy_status([istiod_server.url], namespace="dev")
    assert [f.origin for f in of_code(findings, "MB2001")] == ["Pod dev/b-1"]
    assert findings[0].evidence["proxies"] == 1


def test_entries_from_every_istiod_are_merged(istiod_server, second_istiod):
    istiod_server.answer("/debug/syncz", [syncz_entry("a-1.prod")])
    second_istiod.answer("/debug/syncz", [syncz_entry("b-1.prod")])
    findings = run_proxy_status([istiod_server.url, second_istiod.url])
    assert findings[0].message == "2 synced, 0 stale, 0 rejecting config, 0 not sent (2 proxies across 2 istiod)"


def test_istiod_answering_500_is_an_unreachable_finding_not_a_traceback(istiod_server):
    istiod_server.answer("/debug/syncz", "boom", status=500)
    [finding] = run_proxy_status([istiod_server.url])
    assert finding.code == "MB2005"
    assert "HTTP 500" in finding.message


def test_istiod_answering_non_json_is_reported(istiod_server):
    istiod_server.answer("/debug/syncz", "<html>login</html>")
    [finding] = run_proxy_status([istiod_server.url])
    assert finding.code == "MB2005" and "not JSON" in finding.message


def test_istiod_answering_a_json_object_instead_of_a_list_is_reported(istiod_server):
    istiod_server.answer("/debug/syncz", {"error": "unauthorized"})
    [finding] = run_proxy_status([istiod_server.url])
    assert finding.code == "MB2005" and "did not return a JSON array" in finding.message


def test_istiod_refusing_connections_is_reported():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    [finding] = run_proxy_status([f"http://127.0.0.1:{port}"])
    assert finding.code == "MB2005" and "connection failed" in finding.message


def test_without_any_istiod_the_check_says_it_was_skipped():
    ctx = CheckContext(snapshot=snapshot_from_yaml(""), endpoints=EndpointResolver(http=http_endpoint))
    [finding] = CHECKS.run("proxy-status", ctx)
    assert finding.code == "MB0004" and "no running istiod" in finding.message


# -- during an istiod rollout (issue 28 item 7) ------------------------------------------------------------

def rollout_pods(old_status: str, *, new_ready: str = "True") -> str:
    """The replacement istiod (Ready unless ``new_ready`` says otherwise) and the old one: ``old_status`` holds
    its metadata and status."""
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: istiod-new, namespace: istio-system, labels: {{app: istiod}}}}
spec:
  containers: [{{name: discovery, image: "docker.io/istio/pilot:1.24.2"}}]
status: {{phase: Running, conditions: [{{type: Ready, status: "{new_ready}"}}]}}
---
apiVersion: v1
kind: Pod
{old_status}
spec:
  containers: [{{name: discovery, image: "docker.io/istio/pilot:1.24.2"}}]
"""


TERMINATING_OLD = """metadata: {name: istiod-old, namespace: istio-system, labels: {app: istiod},
           deletionTimestamp: "2026-11-30T05:18:00Z"}
status: {phase: Running, conditions: [{type: Ready, status: "True"}]}"""
NOT_READY_OLD = """metadata: {name: istiod-old, namespace: istio-system, labels: {app: istiod}}
status: {phase: Running, conditions: [{type: Ready, status: "False"}]}"""


def run_rollout(new_server, old_server, old_status: str):
    new_server.answer("/debug/syncz", [syncz_entry("payment-1.prod")])
    old_server.answer("/debug/syncz", [syncz_entry("payment-1.prod", synced=False, listener_sent="n2",
                                                   listener_acked="n1")])
    forwarder = ForwardToFakes({"istiod-new": new_server.url, "istiod-old": old_server.url})
    ctx = CheckContext(snapshot=snapshot_from_yaml(rollout_pods(old_status)),
                       endpoints=EndpointResolver(http=http_endpoint, port_forwarder=forwarder))
    return report_order(CHECKS.run("proxy-status", ctx))


@pytest.mark.parametrize("old_status, why", [(TERMINATING_OLD, "is terminating"), (NOT_READY_OLD, "is not Ready")])
def test_a_terminating_or_not_ready_istiod_is_not_asked(istiod_server, second_istiod, old_status, why):
    findings = run_rollout(istiod_server, second_istiod, old_status)

    assert "/debug/syncz" not in [r.path for r in second_istiod.requests]
    assert of_code(findings, "MB2001") == []
    summary = findings[0]
    assert summary.message == "1 synced, 0 stale, 0 rejecting config, 0 not sent (1 proxies across 1 istiod)"
    assert summary.evidence["istiods_not_asked"] == {"istio-system/istiod-old": why}


def test_when_no_istiod_is_ready_the_check_says_why_it_asked_none(istiod_server):
    ctx = CheckContext(snapshot=snapshot_from_yaml(rollout_pods(TERMINATING_OLD, new_ready="False")),
                       endpoints=EndpointResolver(http=http_endpoint, port_forwarder=ForwardToFakes({})))
    [finding] = CHECKS.run("proxy-status", ctx)
    assert finding.code == "MB0004"
    assert "istio-system/istiod-new is not Ready" in finding.message
    assert "istio-system/istiod-old is terminating" in finding.message


def sent_at(proxy: str, moment: str, *, acked: bool) -> dict:
    """A 1.24 entry whose listeners were last pushed at ``moment``; ``acked`` False leaves them STALE."""
    entry = synced_entry(proxy, "1.24.2")
    for status in entry["resources"].values():
        status["sentTime"] = moment
        if not acked:
            status["acked"] = "an-older-nonce"
    return entry


def test_a_proxy_two_ready_istiods_report_is_shown_once_from_the_istiod_that_pushed_last(istiod_server,
                                                                                          second_istiod):
    # The old istiod still lists the proxy (its stream has not closed) with the pushes it never got acked.
    serve(istiod_server, [sent_at("payment-1.prod", "2026-11-30T05:02:17.210448115Z", acked=False)], "1.24.2")
    serve(second_istiod, [sent_at("payment-1.prod", "2026-11-30T05:18:55.671230908Z", acked=True)], "1.24.2")

    findings = run_proxy_status([istiod_server.url, second_istiod.url])

    assert of_code(findings, "MB2001") == []
    assert findings[0].message == "1 synced, 0 stale, 0 rejecting config, 0 not sent (1 proxies across 2 istiod)"


def test_the_fresher_report_wins_whichever_istiod_is_asked_first(istiod_server, second_istiod):
    serve(istiod_server, [sent_at("payment-1.prod", "2026-11-30T05:18:55Z", acked=False)], "1.24.2")
    serve(second_istiod, [sent_at("payment-1.prod", "2026-11-30T05:02:17Z", acked=True)], "1.24.2")

    findings = run_proxy_status([istiod_server.url, second_istiod.url])

    [stale] = of_code(findings, "MB2001")
    assert stale.origin == "Pod prod/payment-1" and stale.evidence["istiod"] == istiod_server.url


# -- istiod's push health (commands/checks/push_health.py) ----------------------------------------------------

HEALTHY_METRICS = Path(__file__).resolve().parent / "data" / "istiod-metrics" / "healthy.txt"


def metrics_with(**values: float) -> str:
    """The healthy istiod metrics with some unlabelled samples set to other values."""
    lines = HEALTHY_METRICS.read_text().splitlines()
    return "\n".join(f"{line.split(' ')[0]} {values[line.split(' ')[0]]}" if line.split(" ")[0] in values else line
                     for line in lines) + "\n"


def with_queue_buckets(counts: dict[str, int]) -> str:
    lines = HEALTHY_METRICS.read_text().splitlines()
    out = []
    for line in lines:
        le = line.partition('le="')[2].partition('"')[0] if line.startswith("pilot_proxy_queue_time_bucket") else ""
        out.append(f'pilot_proxy_queue_time_bucket{{le="{le}"}} {counts[le]}' if le in counts else line)
    return "\n".join(out) + "\n"


def test_listener_conflicts_istiod_reports_are_a_warning_naming_each_kind(istiod_server):
    serve(istiod_server, [synced_entry("productpage-v1-1.bookinfo", "1.24.2")], version="1.24.2")
    istiod_server.answer("/metrics", metrics_with(pilot_conflict_outbound_listener_tcp_over_current_tcp=2,
                                                  pilot_conflict_inbound_listener=1))
    [conflict] = of_code(run_proxy_status([istiod_server.url]), "MB2013")
    assert conflict.level == "Warning"
    assert "dropped 3 listeners" in conflict.message
    assert "1 inbound, 2 outbound TCP over TCP" in conflict.message
    assert "restart" not in (conflict.remediation.command or "")


def test_a_push_queue_that_does_not_drain_is_a_warning(istiod_server):
    serve(istiod_server, [synced_entry("productpage-v1-1.bookinfo", "1.24.2")], version="1.24.2")
    # 412 pushes: 40 dequeued within 10 s, the rest waited 10-30 s (the default histogram's buckets).
    slow = with_queue_buckets({"0.1": 10, "0.5": 12, "1": 15, "3": 20, "5": 25, "10": 40, "20": 300, "30": 412,
                               "+Inf": 412})
    istiod_server.answer("/metrics", slow)
    [backlog] = of_code(run_proxy_status([istiod_server.url]), "MB2014")
    assert "beyond the 10 s debounce ceiling" in backlog.message


def test_a_healthy_istiods_push_metrics_say_nothing(istiod_server):
    serve(istiod_server, [synced_entry("productpage-v1-1.bookinfo", "1.24.2")], version="1.24.2")
    codes_seen = {f.code for f in run_proxy_status([istiod_server.url])}
    assert not codes_seen & {"MB2013", "MB2014", "MB0004"}


def test_istiod_metrics_refused_to_a_remote_caller_are_said_not_passed_over(istiod_server):
    serve(istiod_server, [synced_entry("productpage-v1-1.bookinfo", "1.24.2")], version="1.24.2")
    istiod_server.answer("/metrics", "Only requests from localhost are allowed\n", status=403)
    [skipped] = of_code(run_proxy_status([istiod_server.url]), "MB0004")
    assert "istiod push health" in skipped.message
