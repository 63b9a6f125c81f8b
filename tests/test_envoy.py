"""The ``envoy`` check against the real Envoy binary, real traffic and captured admin answers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path

import httpx
import pytest

from commands.checks.envoy import STATS_INCLUSION_REGEX, envoy, memory_bytes, parse_stats
from commands.checks.registry import CheckContext, Thresholds
from commands.clients.http import http_endpoint
from commands.cluster.endpoints import EndpointResolver
from commands.cluster.snapshot import Resource, Snapshot
from commands.findings import Finding, Level
from commands.resources.references import PodRef
from tests.support.certs import mint
from tests.support.envoy import FailingUpstreamEnvoy, RunningEnvoy, istio_stats_config
from tests.support.http_server import closed_port_url

POD = PodRef("prod", "api-service-6b7c9d8f5-k2m4p")
MIB = 2**20
DATA = Path(__file__).resolve().parent / "data"


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


# /clusters of a sidecar that served 100 inbound requests: traffic seen, so silence means healthy.
INBOUND_TRAFFIC = {"cluster_statuses": [{"name": "inbound|8080||", "host_statuses": [{
    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 8080}},
    "stats": [{"name": "rq_total", "value": "100"}, {"name": "rq_success", "value": "100"}],
    "health_status": {"eds_health_status": "HEALTHY"}}]}]}


def capture(directory: Path, *, memory: Mapping[str, str], stats: str = "server.live: 1\n") -> str:
    directory.mkdir(exist_ok=True)
    (directory / "memory.json").write_text(json.dumps(memory))
    (directory / "stats.txt").write_text(stats)
    (directory / "clusters.json").write_text(json.dumps(INBOUND_TRAFFIC))
    return str(directory)


def pod_owned_by_replicaset(ref: PodRef, replicaset: str) -> Snapshot:
    return Snapshot([Resource.from_object({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": ref.name, "namespace": ref.namespace,
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": replicaset}]},
        "spec": {"containers": [{"name": "app"}, {"name": "istio-proxy"}]}})])


# -- real Envoy, real traffic ---------------------------------------------------------

def stat_of(proxy: FailingUpstreamEnvoy, name: str) -> str:
    return f"cluster.{proxy.cluster}.{name}"


def wait_until_answered(futures: list[Future[int]], count: int, timeout: float = 5.0) -> list[int]:
    """Statuses of the first ``count`` answers (the rest are still held by the slow upstream)."""
    deadline = time.monotonic() + timeout
    while len(done := [f.result() for f in futures if f.done()]) < count:
        assert time.monotonic() < deadline, f"only {len(done)} of {count} requests answered"
        time.sleep(0.02)
    return done


@pytest.mark.envoy
def test_requests_refused_by_full_breaker_are_error_with_their_count(
        upstream_envoy: Callable[..., FailingUpstreamEnvoy]) -> None:
    proxy = upstream_envoy()  # max_connections, max_pending_requests, max_requests: 1
    with proxy.burst("/stuck", 25) as requests:
        # One request at the upstream, one waiting for the connection, 23 refused at once.
        proxy.envoy.wait_for_stat(stat_of(proxy, "upstream_rq_pending_overflow"), 23)
        assert wait_until_answered(requests, 23) == [503] * 23
        findings = run_envoy_check({POD: proxy.envoy.admin_url})

    breaker = only(findings, "MB4001")
    assert breaker.level is Level.ERROR
    assert breaker.origin == f"Pod {POD}"
    assert "rejected 23 requests to payment.prod:8080" in breaker.message
    assert "|" not in breaker.message  # Istio's cluster name never reaches a person
    assert "23 over max_pending_requests (http1MaxPendingRequests)" in breaker.message
    assert "max_requests and max_pending_requests still at capacity" in breaker.message
    assert breaker.evidence["upstream_rq_pending_overflow"] == 23
    assert "default.rq_open" in breaker.evidence["open_circuit_breakers"]
    assert "connectionPool" in breaker.remediation.summary
    assert "--fqdn payment.prod.svc.cluster.local --port 8080" in breaker.remediation.command


@pytest.mark.envoy
def test_503_share_counts_refused_requests_that_upstream_rq_total_leaves_out(
        upstream_envoy: Callable[..., FailingUpstreamEnvoy]) -> None:
    proxy = upstream_envoy()
    with proxy.burst("/stuck", 25):
        proxy.envoy.wait_for_stat(stat_of(proxy, "upstream_rq_503"), 23)
        findings = run_envoy_check({POD: proxy.envoy.admin_url})

    share = only(findings, "MB4002")
    # Envoy counts a request in upstream_rq_total only once it gets a connection: 1 here, below
    # min_requests, while 23 callers got 503 UO. Requests = total + refused.
    assert (share.evidence["upstream_rq_total"], share.evidence["requests"]) == (1, 24)
    assert "(23 of 24;" in share.message and "95.8% of requests" in share.message
    assert "by response flag: UO 23" in share.message


@pytest.mark.envoy
def test_max_requests_refusals_counted_as_active_overflow_are_rejections_too(
        keepalive_upstream_envoy: Callable[..., FailingUpstreamEnvoy]) -> None:
    # Two connections allowed but one request: a second connection opens for the waiting request and
    # then cannot take it, which Envoy 1.38+ counts in upstream_rq_active_overflow, not pending_overflow.
    proxy = keepalive_upstream_envoy(max_connections=2, max_requests=1, max_pending_requests=5)
    with proxy.burst("/stuck", 3):
        proxy.envoy.wait_for_stat(stat_of(proxy, "upstream_rq_active_overflow"), 2)
        findings = run_envoy_check({POD: proxy.envoy.admin_url})

    breaker = only(findings, "MB4001")
    assert "rejected 2 requests" in breaker.message and "over max_requests (http2MaxRequests)" in breaker.message
    assert breaker.evidence["upstream_rq_pending_overflow"] == 0


@pytest.mark.envoy
def test_idle_keepalive_connection_at_max_connections_is_info_not_rejection(
        keepalive_upstream_envoy: Callable[..., FailingUpstreamEnvoy]) -> None:
    proxy = keepalive_upstream_envoy()  # max_connections: 1
    assert proxy.send("/", 5) == [200] * 5
    proxy.envoy.wait_for_stat(stat_of(proxy, "circuit_breakers.default.cx_open"), 1)

    findings = run_envoy_check({POD: proxy.envoy.admin_url})

    assert codes_of(findings) == ["MB4009"]
    assert findings[0].level is Level.INFO
    assert "max_connections circuit breaker" in findings[0].message and "rejected nothing" in findings[0].message
    assert "rejected (" not in findings[0].message


@pytest.mark.envoy
def test_request_breaker_at_capacity_without_refusals_is_warning(
        keepalive_upstream_envoy: Callable[..., FailingUpstreamEnvoy]) -> None:
    proxy = keepalive_upstream_envoy(max_connections=5, max_pending_requests=5)  # max_requests: 1
    with proxy.burst("/stuck", 1):
        proxy.envoy.wait_for_stat(stat_of(proxy, "circuit_breakers.default.rq_open"), 1)
        findings = run_envoy_check({POD: proxy.envoy.admin_url})

    at_capacity = only(findings, "MB4010")
    assert at_capacity.level is Level.WARNING
    assert "one more concurrent request gets a 503 UO" in at_capacity.message
    assert "MB4001" not in codes_of(findings)


@pytest.mark.envoy
def test_retries_cut_by_retry_breaker_are_warning(upstream_envoy: Callable[..., FailingUpstreamEnvoy]) -> None:
    # Ten requests fail together after 0.3 s; max_retries 1 lets one retry run at a time.
    proxy = upstream_envoy(retries=1, max_connections=50, max_pending_requests=50, max_requests=50, max_retries=1)
    with proxy.burst("/busy", 10) as requests:
        assert wait_until_answered(requests, 10, timeout=8) == [503] * 10
    skipped = proxy.envoy.stat(stat_of(proxy, "upstream_rq_retry_overflow"))

    retries = only(run_envoy_check({POD: proxy.envoy.admin_url}), "MB4008")

    assert skipped > 0 and retries.evidence["upstream_rq_retry_overflow"] == skipped
    assert retries.level is Level.WARNING and f"{skipped} retries" in retries.message
    assert "maxRetries" in retries.remediation.summary


@pytest.mark.envoy
def test_normal_traffic_under_the_limits_is_quiet(upstream_envoy: Callable[..., FailingUpstreamEnvoy]) -> None:
    proxy = upstream_envoy(max_connections=50, max_pending_requests=50, max_requests=50, max_retries=50)
    assert proxy.send("/ok", 30) == [200] * 30

    assert run_envoy_check({POD: proxy.envoy.admin_url}) == []


@pytest.mark.envoy
def test_sidecar_with_istio_default_stats_matcher_says_stats_are_not_exported(
        upstream_envoy: Callable[..., FailingUpstreamEnvoy]) -> None:
    proxy = upstream_envoy(stats_config=istio_stats_config(), control_plane_cluster=True)
    with proxy.burst("/stuck", 25) as requests:
        wait_until_answered(requests, 23)  # a real overload the stats cannot show
        findings = run_envoy_check({POD: proxy.envoy.admin_url})

    hidden = only(findings, "MB4012")
    assert codes_of(findings) == ["MB4012"] and hidden.level is Level.INFO
    assert hidden.evidence == {"active_clusters": 2, "exported_clusters": ["xds-grpc"]}
    assert "1 of its clusters" in hidden.message
    assert "proxyStatsMatcher.inclusionRegexps" in hidden.remediation.summary
    assert "proxy.istio.io/config" in hidden.remediation.summary
    assert "meshConfig.defaultConfig" in hidden.remediation.summary
    assert hidden.remediation.command == f"istioctl proxy-config bootstrap {POD.name} -n prod -o json"


@pytest.mark.envoy
def test_suggested_inclusion_regex_exports_what_the_check_reads(
        upstream_envoy: Callable[..., FailingUpstreamEnvoy]) -> None:
    proxy = upstream_envoy(stats_config=istio_stats_config(STATS_INCLUSION_REGEX), control_plane_cluster=True)
    with proxy.burst("/stuck", 25):
        proxy.envoy.wait_for_stat(stat_of(proxy, "upstream_rq_pending_overflow"), 23)
        findings = run_envoy_check({POD: proxy.envoy.admin_url})

    assert {"MB4001", "MB4002"} <= set(codes_of(findings)) and "MB4012" not in codes_of(findings)


@pytest.mark.envoy
def test_istio_default_stats_without_traffic_says_nothing_was_judged(envoy_factory) -> None:
    proxy = envoy_factory(stats_config=istio_stats_config(), control_plane_cluster=True)

    assert codes_of(run_envoy_check({POD: proxy.admin_url})) == ["MB4026"]


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
    assert "100% of requests" in share.message and "(25 of 25;" in share.message


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

    findings = codes_of(run_envoy_check({POD: proxy.envoy.admin_url}))

    # The 15 failures still show as exhausted retries (URX), a count, not a share.
    assert "MB4002" not in findings and "MB4003" not in findings and "MB4016" in findings


@pytest.mark.envoy
def test_real_envoy_without_traffic_is_not_called_healthy(envoy_factory) -> None:
    quiet = envoy_factory(cert_pem=(cert := mint("payment")).cert_pem, key_pem=cert.key_pem)

    findings = run_envoy_check({POD: quiet.admin_url})

    assert codes_of(findings) == ["MB4026"] and findings[0].level is Level.INFO


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
    # Never a pod deletion as a first step: find the owner to roll it.
    assert warning.remediation.command == (f"kubectl -n prod get pod {POD.name} "
                                           "-o jsonpath='{.metadata.ownerReferences[*].name}'")


def test_no_endpoints_means_the_check_is_skipped() -> None:
    findings = envoy(CheckContext(snapshot=Snapshot()))

    assert codes_of(findings) == ["MB0004"] and findings[0].level is Level.INFO


def test_captured_overflow_stats_are_error_and_503_share_over_refused_requests() -> None:
    # tests/data/envoy-uo-overflow: real /stats, /clusters and /memory of Envoy 1.40 (limits 1, 25 concurrent
    # requests to an upstream that holds them), captured by scripts/capture_envoy_cases.py.
    findings = run_envoy_check({POD: str(DATA / "envoy-uo-overflow")})

    assert codes_of(findings) == ["MB4001", "MB4002"]
    assert only(findings, "MB4002").evidence["requests"] == 24


def test_captured_istio_default_stats_say_the_stats_are_not_exported() -> None:
    # tests/data/envoy-uo-overflow-istio-defaults: the same overload behind Istio's default stats inclusion list.
    assert codes_of(run_envoy_check({POD: str(DATA / "envoy-uo-overflow-istio-defaults")})) == ["MB4012"]


def test_connection_pool_overflow_counts_as_rejected_requests(tmp_path: Path) -> None:
    # max_connection_pools refusals end in the router's "no healthy upstream" 503 (counted in upstream_rq_503,
    # not in upstream_rq_total); only non-Istio configurations set that limit.
    name = "outbound|8080||payment.prod.svc.cluster.local"
    admin = capture(tmp_path / "api", memory={}, stats="\n".join([
        "cluster_manager.active_clusters: 1",
        f"cluster.{name}.circuit_breakers.default.cx_pool_open: 0",
        f"cluster.{name}.upstream_cx_pool_overflow: 30",
        f"cluster.{name}.upstream_rq_503: 30",
        f"cluster.{name}.upstream_rq_total: 70",
    ]))

    findings = run_envoy_check({POD: admin})

    assert "rejected 30 requests" in only(findings, "MB4001").message
    assert "no breaker is at capacity now" in only(findings, "MB4001").message
    assert "30% of requests" in only(findings, "MB4002").message


def test_gauge_at_capacity_after_overflow_is_reported_once_as_rejection(tmp_path: Path) -> None:
    name = "outbound|8080||payment.prod.svc.cluster.local"
    admin = capture(tmp_path / "api", memory={}, stats="\n".join([
        f"cluster.{name}.circuit_breakers.default.cx_open: 1",
        f"cluster.{name}.circuit_breakers.default.rq_pending_open: 1",
        f"cluster.{name}.upstream_cx_overflow: 4",
        f"cluster.{name}.upstream_rq_pending_overflow: 2",
        f"cluster.{name}.upstream_rq_503: 2",
        f"cluster.{name}.upstream_rq_total: 500",
    ]))

    assert codes_of(run_envoy_check({POD: admin})) == ["MB4001"]


def test_connection_overflow_without_refused_requests_is_info(tmp_path: Path) -> None:
    name = "outbound|8080||payment.prod.svc.cluster.local"
    admin = capture(tmp_path / "api", memory={}, stats="\n".join([
        f"cluster.{name}.circuit_breakers.default.cx_open: 1",
        f"cluster.{name}.upstream_cx_overflow: 4",
        f"cluster.{name}.upstream_rq_pending_overflow: 0",
        f"cluster.{name}.upstream_rq_total: 500",
    ]))

    findings = run_envoy_check({POD: admin})

    assert codes_of(findings) == ["MB4011"] and findings[0].level is Level.INFO
    assert "refused 4 new connections" in findings[0].message and "none was rejected" in findings[0].message


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
