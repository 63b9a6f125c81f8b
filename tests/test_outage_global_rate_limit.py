"""The global rate limit service on the real Envoy: a sidecar whose envoy.filters.http.ratelimit (Istio's rate limit task,
failure_mode_deny true) asks a gRPC rate limit service that says over limit (RL, 429, MB4033), that cannot be
reached (RLSE, 500, MB4034), or that cannot be reached with failure_mode_deny false (let through, MB4035); a service
answering OK stays quiet.

The rate limit service is real gRPC as Envoy speaks it: a second Envoy terminates the gRPC call with
``grpc_http1_reverse_bridge`` (withhold_grpc_frames) and hands the bare RateLimitResponse to a small HTTP server here,
so the sidecar's gRPC client, its framing and trailers are Envoy's own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from commands.checks.envoy import envoy, parse_stats
from commands.checks.envoy.flags import FAILURE_MODES
from commands.checks.envoy.global_rate_limit import global_rate_limit_findings
from commands.checks.registry import CheckContext
from commands.clients.http import http_endpoint
from commands.cluster.endpoints import EndpointResolver
from commands.cluster.snapshot import Snapshot
from commands.findings import Finding, Level
from commands.resources.references import PodRef
from commands.thresholds import Thresholds
from tests.support import sidecar as s
from tests.support.envoy import RunningEnvoy
from tests.support.envoy_cases import Lab, send

POD = PodRef("prod", "checkout-6b7c9d8f5-k2m4p")
# Istio's rate limit task: the ratelimit Service in the default namespace on gRPC port 8081, domain "ratelimit"
# (istio.io/latest/docs/tasks/policy-enforcement/rate-limit/).
RATE_LIMIT_HOST = "ratelimit.default.svc.cluster.local"
RATE_LIMIT_CLUSTER = f"outbound|8081||{RATE_LIMIT_HOST}"
REQUESTS = 20
# envoy.service.ratelimit.v3.RateLimitResponse: field 1 overall_code, enum Code {UNKNOWN 0, OK 1, OVER_LIMIT 2}
# (envoyproxy/envoy api/envoy/service/ratelimit/v3/rls.proto), as protobuf wire bytes (tag 0x08, varint).
ANSWER_OK, ANSWER_OVER_LIMIT = b"\x08\x01", b"\x08\x02"
_RATE_LIMIT = "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit"
_BRIDGE = "type.googleapis.com/envoy.extensions.filters.http.grpc_http1_reverse_bridge.v3.FilterConfig"
_HTTP2_UPSTREAM = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "explicit_http_config": {"http2_protocol_options": {}}}}


class _RateLimitAnswers(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        answer: bytes = self.server.answer  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-type", "application/grpc")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


class RateLimitService:
    """A rate limit service that gives every ShouldRateLimit call the same answer, behind a gRPC-terminating Envoy."""

    def __init__(self, lab: Lab, answer: bytes):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _RateLimitAnswers)
        self.server.answer = answer  # type: ignore[attr-defined]
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        listener = s.outbound_listener([s.service_vhost(s.route("rate-limit-answers"))], name="grpc")
        manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
        manager["stat_prefix"] = "grpc"
        manager["http_filters"].insert(0, {"name": "envoy.filters.http.grpc_http1_reverse_bridge", "typed_config": {
            "@type": _BRIDGE, "content_type": "application/grpc", "withhold_grpc_frames": True}})
        self.front = lab.start([listener], [s.outbound_cluster(self.server.server_address[1],
                                                                 name="rate-limit-answers")])

    @property
    def port(self) -> int:
        return self.front.listener_ports["grpc"]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def rate_limited_sidecar(lab: Lab, service_port: int, *, failure_mode_deny: bool,
                         stat_prefix: str | None = None) -> RunningEnvoy:
    """The outbound port with the global rate limit filter before the router, as the task's EnvoyFilter inserts it,
    and one rate limit action on the service's virtual host (every request carries one descriptor)."""
    vhost = dict(s.service_vhost(), rate_limits=[{"actions": [{"generic_key": {"descriptor_value": "payment"}}]}])
    listener = s.outbound_listener([vhost])
    listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"].insert(0, {
        "name": "envoy.filters.http.ratelimit", "typed_config": {
            "@type": _RATE_LIMIT, "domain": "ratelimit", "failure_mode_deny": failure_mode_deny, "timeout": "5s",
            "rate_limit_service": {"transport_api_version": "V3", "grpc_service": {"envoy_grpc": {
                "cluster_name": RATE_LIMIT_CLUSTER, "authority": RATE_LIMIT_HOST}}},
            **({"stat_prefix": stat_prefix} if stat_prefix else {})}})
    service_cluster = dict(s.outbound_cluster(service_port, name=RATE_LIMIT_CLUSTER),
                           typed_extension_protocol_options=_HTTP2_UPSTREAM)
    return lab.start([listener], [s.outbound_cluster(lab.upstream()), service_cluster])


def check(admin_url: str) -> list[Finding]:
    endpoints = EndpointResolver(http=http_endpoint, envoy_admin_urls={POD: admin_url})
    return envoy(CheckContext(snapshot=Snapshot(), thresholds=Thresholds(), endpoints=endpoints))


def codes_of(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def texts(findings: list[Finding]) -> list[str]:
    """What a person reads: messages and first steps, never Istio's cluster names or Envoy's stat names."""
    return [t for f in findings for t in (f.message, f.remediation.summary if f.remediation else "",
                                          (f.remediation.command or "") if f.remediation else "")]


def only(findings: list[Finding], code: str) -> Finding:
    [finding] = [f for f in findings if f.code == code]
    return finding


@pytest.fixture
def lab(envoy_binary: str, tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(binary=envoy_binary, workdir=tmp_path)
    yield lab
    lab.close()


@pytest.fixture
def rate_limit_service(lab: Lab) -> Iterator[Callable[[bytes], RateLimitService]]:
    started: list[RateLimitService] = []

    def start(answer: bytes) -> RateLimitService:
        started.append(RateLimitService(lab, answer))
        return started[-1]

    yield start
    for service in started:
        service.stop()


# -- the real Envoy ----------------------------------------------------------------------------------------------

@pytest.mark.envoy
def test_service_saying_over_limit_refuses_with_429_and_is_named_global(lab: Lab, rate_limit_service) -> None:
    proxy = rate_limited_sidecar(lab, rate_limit_service(ANSWER_OVER_LIMIT).port, failure_mode_deny=True)

    statuses = send(proxy, REQUESTS)
    findings = check(proxy.admin_url)

    assert statuses == [429] * REQUESTS
    assert codes_of(findings) == ["MB4033"]
    assert not [text for text in texts(findings) if "outbound|" in text or "ratelimit." in text]
    refused = findings[0]
    assert refused.level is Level.ERROR
    assert f"{REQUESTS} of {REQUESTS} requests to payment.prod:8080" in refused.message
    assert FAILURE_MODES["MB4033"].cause("descriptor-limit").state in refused.message


@pytest.mark.envoy
def test_a_filter_with_its_own_stat_prefix_is_read_as_well(lab: Lab, rate_limit_service) -> None:
    # An EnvoyFilter may set stat_prefix: Envoy then counts under cluster.<c>.<stat_prefix>.ratelimit., which the
    # proxyStatsMatcher regex this check asks for must export too (the lab's Envoy applies it, as a sidecar does).
    proxy = rate_limited_sidecar(lab, rate_limit_service(ANSWER_OVER_LIMIT).port, failure_mode_deny=True,
                                 stat_prefix="payments_quota")

    statuses = send(proxy, REQUESTS)
    findings = check(proxy.admin_url)

    assert statuses == [429] * REQUESTS
    assert codes_of(findings) == ["MB4033"]
    assert f"{REQUESTS} of {REQUESTS} requests to payment.prod:8080" in findings[0].message


@pytest.mark.envoy
def test_service_saying_ok_stays_quiet(lab: Lab, rate_limit_service) -> None:
    proxy = rate_limited_sidecar(lab, rate_limit_service(ANSWER_OK).port, failure_mode_deny=True)

    statuses = send(proxy, REQUESTS)

    assert statuses == [200] * REQUESTS
    assert check(proxy.admin_url) == []


@pytest.mark.envoy
def test_unreachable_service_with_failure_mode_deny_refuses_every_request_with_500(lab: Lab) -> None:
    proxy = rate_limited_sidecar(lab, s.closed_port(), failure_mode_deny=True)

    statuses = send(proxy, REQUESTS)
    findings = check(proxy.admin_url)

    assert statuses == [500] * REQUESTS
    refused = only(findings, "MB4034")
    assert refused.level is Level.ERROR and f"{REQUESTS} of {REQUESTS} requests" in refused.message
    # The rate limit service is an ordinary cluster of the sidecar: its refused connections show too, and say where.
    assert "MB4014" in codes_of(findings) and "MB4033" not in codes_of(findings)
    assert refused.remediation is not None and "failure_mode_deny" in refused.remediation.summary


@pytest.mark.envoy
def test_unreachable_service_without_failure_mode_deny_lets_requests_through_unlimited(lab: Lab) -> None:
    proxy = rate_limited_sidecar(lab, s.closed_port(), failure_mode_deny=False)

    statuses = send(proxy, REQUESTS)
    findings = check(proxy.admin_url)

    assert statuses == [200] * REQUESTS
    let_through = only(findings, "MB4035")
    assert let_through.level is Level.WARNING and "let through unlimited" in let_through.message
    assert "MB4034" not in codes_of(findings)


# -- the counters as the real Envoy names them ---------------------------------------------------------------------

def findings_from(stats_text: str) -> list[Finding]:
    stats = parse_stats(stats_text)
    return [f for c in stats.clusters.values() for f in global_rate_limit_findings(POD, c, Thresholds())]


def test_local_rate_limit_counters_are_not_read_as_the_global_service() -> None:
    text = ("http_local_rate_limiter.http_local_rate_limit.rate_limited: 16\n"
            "http_local_rate_limiter.http_local_rate_limit.ok: 4\n"
            "cluster.outbound|8080||payment.prod.svc.cluster.local;.upstream_rq_total: 4\n")

    assert findings_from(text) == []


def test_a_few_over_limit_answers_among_many_are_background() -> None:
    text = ("cluster.outbound|8080||payment.prod.svc.cluster.local;.ratelimit.ok: 4000\n"
            "cluster.outbound|8080||payment.prod.svc.cluster.local;.ratelimit.over_limit: 7\n")

    assert findings_from(text) == []


def test_the_inbound_port_limited_by_the_service_is_named_as_the_pods_own_port() -> None:
    text = ("cluster.inbound|9080||;.ratelimit.over_limit: 30\n"
            "cluster.inbound|9080||;.ratelimit.ok: 10\n")

    [finding] = findings_from(text)

    assert finding.code == "MB4033" and "30 of 40 requests to its own inbound port 9080" in finding.message
