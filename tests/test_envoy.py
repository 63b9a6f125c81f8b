"""The ``envoy`` check against the real Envoy binary, real traffic and captured admin answers."""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

from commands.checks.registry import CheckContext, Thresholds
from commands.cluster.endpoints import EndpointResolver, PodRef
from commands.checks.envoy import envoy, memory_bytes, parse_stats
from commands.findings import Finding, Level
from commands.clients.http import http_endpoint
from commands.cluster.snapshot import Resource, Snapshot
from tests.support.certs import mint
from tests.support.envoy import FailingUpstreamEnvoy, RunningEnvoy

POD = PodRef("prod", "api-service-6b7c9d8f5-k2m4p")
MIB = 2**20


def run_envoy_check(admin_urls: Mapping[PodRef, str], *, thresholds: Thresholds | None = None,
                    snapshot: Snapshot | None = None) -> list[Finding]:
    endpoints = EndpointResolver(http=http_endpoint, envoy_admin_urls=dict(admin_urls))
    return envoy(CheckContext(snapshot=snapshot or Snapshot(), thresholds=thresholds or Thresholds(),
                              endpoints=endpoints))


def codes_of(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def only(findings: list[Finding], code: str) -> Finding:
    matching = [f for f in findings if f.code == code]
    assert len(matching) == 1, codes_of(findings)
    return matching[0]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def capture(directory: Path, *, memory: Mapping[str, str], stats: str = "server.live: 1\n") -> str:
    directory.mkdir(exist_ok=True)
    (directory / "memory.json").write_text(json.dumps(memory))
    (directory / "stats.txt").write_text(stats)
    return str(directory)


def pod_owned_by_replicaset(ref: PodRef, replicaset: str) -> Snapshot:
    return Snapshot([Resource.from_object({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": ref.name, "namespace": ref.namespace,
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": replicaset}]},
        "spec": {"containers": [{"name": "app"}, {"name": "istio-proxy"}]}})])


# -- real Envoy, real traffic ---------------------------------------------------------

@pytest.mark.envoy
def test_open_circuit_breaker_from_real_traffic_is_error(failing_upstream_envoy: FailingUpstreamEnvoy) -> None:
    proxy = failing_upstream_envoy
    with proxy.in_flight("/slow", 3):
        proxy.envoy.wait_for_stat(f"cluster.{proxy.cluster}.circuit_breakers.default.rq_open", 1)
        findings = run_envoy_check({POD: proxy.envoy.admin_url})

    breaker = only(findings, "MB4001")
    assert breaker.level is Level.ERROR
    assert breaker.origin == f"Pod {POD}"
    assert "default.rq_open" in breaker.evidence["open_circuit_breakers"]
    assert proxy.cluster in breaker.message
    assert "connectionPool" in breaker.remediation.summary
    assert "--fqdn payment.prod.svc.cluster.local" in breaker.remediation.command


@pytest.mark.envoy
def test_503_share_from_real_traffic_is_error(failing_upstream_envoy: FailingUpstreamEnvoy) -> None:
    proxy = failing_upstream_envoy
    assert set(proxy.send("/pay", 25)) == {503}

    findings = run_envoy_check({POD: proxy.envoy.admin_url})

    share = only(findings, "MB4002")
    assert share.level is Level.ERROR
    # Envoy counts every attempt in upstream_rq_total (25 requests + 50 retries) but only
    # the final answer in upstream_rq_503: the share is of requests, not attempts.
    assert (share.evidence["upstream_rq_503"], share.evidence["upstream_rq_total"]) == (25, 75)
    assert "100% of requests" in share.message and "(25 of 25)" in share.message


@pytest.mark.envoy
def test_real_retries_of_503s_are_a_retry_storm(failing_upstream_envoy: FailingUpstreamEnvoy) -> None:
    proxy = failing_upstream_envoy
    proxy.send("/pay", 25)

    storm = only(run_envoy_check({POD: proxy.envoy.admin_url}), "MB4003")

    assert storm.level is Level.WARNING
    assert storm.evidence["upstream_rq_retry"] == 50
    assert "retries.attempts" in storm.remediation.summary


@pytest.mark.envoy
def test_too_few_requests_are_not_judged_by_share(failing_upstream_envoy: FailingUpstreamEnvoy) -> None:
    proxy = failing_upstream_envoy
    proxy.send("/pay", 15)  # 45 upstream attempts but 15 requests, under min_requests

    assert codes_of(run_envoy_check({POD: proxy.envoy.admin_url})) == []


@pytest.mark.envoy
def test_healthy_real_envoy_has_no_findings(envoy_factory) -> None:
    quiet = envoy_factory(cert_pem=(cert := mint("payment")).cert_pem, key_pem=cert.key_pem)

    assert run_envoy_check({POD: quiet.admin_url}) == []


@pytest.mark.envoy
def test_real_envoy_memory_above_warning_threshold(envoy_factory) -> None:
    proxy: RunningEnvoy = envoy_factory(cert_pem=(cert := mint("payment")).cert_pem, key_pem=cert.key_pem)
    real = int(proxy.admin_json("/memory")["total_physical_bytes"])

    findings = run_envoy_check({POD: proxy.admin_url},
                               thresholds=Thresholds(envoy_memory_warning_mb=1, envoy_memory_error_mb=100_000))

    warning = only(findings, "MB4004")
    assert warning.level is Level.WARNING
    assert abs(warning.evidence["memory_bytes"] - real) < 8 * MIB


@pytest.mark.envoy
def test_real_envoy_stats_count_above_threshold(envoy_factory) -> None:
    proxy = envoy_factory(cert_pem=(cert := mint("payment")).cert_pem, key_pem=cert.key_pem)

    finding = only(run_envoy_check({POD: proxy.admin_url}, thresholds=Thresholds(stats_count_warning=100)), "MB4007")

    assert finding.evidence["stats_count"] > 100
    assert "proxyStatsMatcher" in finding.remediation.summary


@pytest.mark.envoy
def test_unreachable_admin_is_error_and_other_sidecars_are_still_checked(envoy_factory) -> None:
    reachable = envoy_factory(cert_pem=(cert := mint("payment")).cert_pem, key_pem=cert.key_pem)
    down = PodRef("prod", "payment-7d9f8c6b5-zz9qx")

    findings = run_envoy_check({down: closed_port_url(), POD: reachable.admin_url},
                               thresholds=Thresholds(stats_count_warning=100))

    unreachable = only(findings, "MB4006")
    assert unreachable.level is Level.ERROR and unreachable.origin == f"Pod {down}"
    assert "connection failed" in unreachable.message
    assert only(findings, "MB4007").origin == f"Pod {POD}"


# -- captured answers -------------------------------------------------------------------

def test_memory_above_error_threshold_is_critical_with_restart_action(tmp_path: Path) -> None:
    admin = capture(tmp_path / "api", memory={"allocated": "812646400", "heap_size": "888143872",
                                              "pageheap_unmapped": "0", "total_physical_bytes": "901775360"})

    findings = run_envoy_check({POD: admin}, snapshot=pod_owned_by_replicaset(POD, "api-service-6b7c9d8f5"))

    critical = only(findings, "MB4005")
    assert critical.level is Level.ERROR
    assert "860.0 MiB" in critical.message and "500.0 MiB" in critical.message
    assert critical.remediation.action == "restart api-service -n prod"
    assert critical.remediation.command == "kubectl -n prod rollout restart deployment/api-service"


def test_memory_is_judged_by_physical_bytes_not_reserved_heap(tmp_path: Path) -> None:
    # 600 MiB of heap reserved, but 300 MiB of it already returned to the OS.
    admin = capture(tmp_path / "api", memory={"allocated": str(280 * MIB), "heap_size": str(600 * MIB),
                                              "pageheap_unmapped": str(300 * MIB),
                                              "total_physical_bytes": str(310 * MIB)})

    assert codes_of(run_envoy_check({POD: admin})) == ["MB4004"]


def test_restart_action_is_left_out_when_the_owner_is_unknown(tmp_path: Path) -> None:
    admin = capture(tmp_path / "api", memory={"total_physical_bytes": str(400 * MIB)})

    warning = only(run_envoy_check({POD: admin}), "MB4004")

    assert warning.remediation.action is None
    assert warning.remediation.command == f"kubectl -n prod delete pod {POD.name}"


def test_no_endpoints_means_the_check_is_skipped() -> None:
    findings = envoy(CheckContext(snapshot=Snapshot()))

    assert codes_of(findings) == ["MB0004"] and findings[0].level is Level.INFO


# -- parsing ------------------------------------------------------------------------------

def test_stats_parsing_keeps_clusters_apart_from_prefixed_variants() -> None:
    name = "outbound|8080||payment.prod.svc.cluster.local"
    text = "\n".join([
        f"cluster.{name}.circuit_breakers.default.rq_open: 1",
        f"cluster.{name}.circuit_breakers.high.cx_open: 0",
        f"cluster.{name}.internal.upstream_rq_503: 7",
        f"cluster.{name}.upstream_rq_503: 40",
        f"cluster.{name}.upstream_rq_total: 100",
        f"cluster.{name}.upstream_cx_connect_ms: P0(nan,1) P25(nan,1.025)",
        f"cluster.{name}.upstream_rq_time: No recorded values",
        "http.ingress.downstream_rq_503: 9",
    ])

    stats = parse_stats(text)

    payment = stats.clusters[name]
    assert (payment.total, payment.errors_503, payment.open_breakers) == (100, 40, ("default.rq_open",))
    assert payment.host == "payment.prod.svc.cluster.local"
    assert stats.clusters[f"{name}.internal"].total == 0
    assert stats.count == 8


def test_memory_numbers_arrive_as_strings() -> None:
    assert memory_bytes({"heap_size": "10485760", "total_physical_bytes": "13560638"}) == 13560638
    assert memory_bytes({"heap_size": "10485760"}) == 10485760
    assert memory_bytes([]) is None


@pytest.mark.envoy
def test_real_envoy_admin_answers_have_the_shapes_the_check_reads(envoy_factory) -> None:
    proxy: RunningEnvoy = envoy_factory(cert_pem=(cert := mint("payment")).cert_pem, key_pem=cert.key_pem)

    memory = proxy.admin_json("/memory")
    stats = parse_stats(httpx.get(f"{proxy.admin_url}/stats").text)

    assert {"allocated", "heap_size", "pageheap_unmapped", "total_physical_bytes"} <= set(memory)
    assert all(isinstance(v, str) and v.isdigit() for v in memory.values())
    assert stats.count > 100
