"""istiod unreachable from the proxies: running sidecars that no istiod's /debug/syncz lists (docs/outage-classes.md
row 24).  istiod is a real HTTP server answering syncz entries in istiod's own shape (tests/support/istiod.py); the
pods are injected as Istio's webhook injects them (tests/support/injected.py)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from commands import codes
from commands.catalog import default_checks
from commands.checks.disconnected import CONNECT_GRACE, disconnected_findings
from commands.checks.registry import CheckContext
from commands.clients.http import http_endpoint
from commands.cluster.endpoints import EndpointResolver
from commands.cluster.snapshot import Resource
from commands.triage import triage
from tests.support.analysis import snapshot_from_yaml
from tests.support.injected import injected_pod
from tests.support.istiod import istiod_pod_yaml, syncz_entry

ISTIOD_POD = istiod_pod_yaml()
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)


def sidecar_pod(name: str, *, started: datetime = NOW - timedelta(hours=3)) -> str:
    pod = injected_pod(name, "prod", {"app": name.split("-")[0]})
    for status in pod["status"]["containerStatuses"]:
        status["state"] = {"running": {"startedAt": started.strftime("%Y-%m-%dT%H:%M:%SZ")}}
    return json.dumps(pod)


def proxy_status(urls: list[str], *pods: str, namespace: str | None = None):
    snapshot = snapshot_from_yaml("\n---\n".join([ISTIOD_POD, *pods]))
    ctx = CheckContext(snapshot=snapshot, now=NOW, namespace=namespace,
                       endpoints=EndpointResolver(http=http_endpoint, istiod_urls=urls))
    return default_checks().run("proxy-status", ctx)


def codes_of(findings) -> list[str]:
    return sorted(f.code for f in findings if f.code in ("MB2015", "MB2016"))


def test_no_sidecar_connected_while_istiod_answers_is_an_error(istiod_server):
    istiod_server.answer("/debug/syncz", [])
    findings = proxy_status([istiod_server.url], sidecar_pod("payment-1"), sidecar_pod("orders-1"))

    [finding] = [f for f in findings if f.code == "MB2016"]
    assert finding.level == "Error"
    assert "None of the 2 running proxies is connected to istiod (prod/orders-1, prod/payment-1)" in finding.message
    assert finding.remediation.command == "kubectl -n prod logs orders-1 -c istio-proxy --tail=50"
    assert "restart" not in finding.remediation.summary.lower()


def test_some_sidecars_missing_from_syncz_is_a_warning_naming_them(istiod_server):
    istiod_server.answer("/debug/syncz", [syncz_entry("payment-1.prod")])
    findings = proxy_status([istiod_server.url], sidecar_pod("payment-1"), sidecar_pod("orders-1"))

    [finding] = [f for f in findings if f.code == "MB2015"]
    assert finding.level == "Warning"
    assert finding.message.startswith("1 of 2 running proxies are connected to no istiod (prod/orders-1)")


def test_every_sidecar_connected_stays_quiet(istiod_server):
    istiod_server.answer("/debug/syncz", [syncz_entry("payment-1.prod"), syncz_entry("orders-1.prod")])
    assert codes_of(proxy_status([istiod_server.url], sidecar_pod("payment-1"), sidecar_pod("orders-1"))) == []


def test_a_proxy_held_by_another_istiod_counts_as_connected(istiod_server, second_istiod):
    istiod_server.answer("/debug/syncz", [syncz_entry("payment-1.prod")])
    second_istiod.answer("/debug/syncz", [syncz_entry("orders-1.prod")])
    findings = proxy_status([istiod_server.url, second_istiod.url], sidecar_pod("payment-1"), sidecar_pod("orders-1"))
    assert codes_of(findings) == []


def test_nothing_is_judged_when_one_istiod_did_not_answer(istiod_server):
    # The missing proxy may hold its stream on the istiod that did not answer; MB2005 already says so.
    istiod_server.answer("/debug/syncz", [syncz_entry("payment-1.prod")])
    findings = proxy_status([istiod_server.url, "http://127.0.0.1:1"], sidecar_pod("payment-1"),
                            sidecar_pod("orders-1"))
    assert "MB2005" in [f.code for f in findings] and codes_of(findings) == []


def test_a_sidecar_started_moments_ago_is_given_time_to_connect(istiod_server):
    istiod_server.answer("/debug/syncz", [syncz_entry("payment-1.prod")])
    fresh = sidecar_pod("orders-1", started=NOW - CONNECT_GRACE + timedelta(seconds=10))
    assert codes_of(proxy_status([istiod_server.url], sidecar_pod("payment-1"), fresh)) == []


def test_only_pods_in_the_namespace_asked_about_are_judged(istiod_server):
    istiod_server.answer("/debug/syncz", [])
    findings = proxy_status([istiod_server.url], sidecar_pod("payment-1"), namespace="staging")
    assert codes_of(findings) == []


def test_pods_without_a_sidecar_and_terminating_pods_are_not_proxies():
    plain = Resource.from_object({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "job-1", "namespace": "prod"},
                                  "spec": {"containers": [{"name": "job"}]}, "status": {"phase": "Running"}})
    leaving = json.loads(sidecar_pod("payment-1"))
    leaving["metadata"]["deletionTimestamp"] = "2026-12-07T11:59:00Z"
    pods = [plain, Resource.from_object(leaving)]
    assert list(disconnected_findings(pods, set(), now=NOW)) == []


def test_a_disconnected_proxys_ageing_certificate_is_explained_by_the_lost_connection_not_a_restart():
    [disconnected] = disconnected_findings([Resource.from_object(json.loads(sidecar_pod("payment-1")))], set(), now=NOW)
    ageing = codes.finding("MB3006", origin="Pod prod/payment-1", what="Workload certificate of prod/payment-1",
                           percent=80, lifetime="24h", left="4h 48m")

    cause = triage([disconnected, ageing]).cause_of(ageing)
    assert cause is not None and cause.finding is disconnected
    assert "restart" not in (cause.first_step.summary if cause.first_step else "").lower()
