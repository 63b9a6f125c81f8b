"""Stream idle timeout (SI) on the real Envoy: a sidecar whose idle timeout someone turned on cuts a silent upstream's
requests with 504, and the envoy check says so (MB4032); Istio's own setting (stream_idle_timeout 0s, no route
idle_timeout) with the same slow upstream stays quiet."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from commands.checks.envoy import envoy, parse_stats
from commands.checks.envoy.flags import FAILURE_MODES
from commands.checks.envoy.idle_timeouts import idle_timeout_findings
from commands.checks.envoy.stats import EnvoyStats
from commands.checks.registry import CheckContext
from commands.clients.http import http_endpoint
from commands.cluster.endpoints import EndpointResolver
from commands.cluster.snapshot import Snapshot
from commands.findings import Finding, Level
from commands.resources.references import PodRef
from commands.thresholds import Thresholds
from tests.support import sidecar as s
from tests.support.envoy import RunningEnvoy
from tests.support.envoy_cases import Lab

POD = PodRef("prod", "checkout-6b7c9d8f5-k2m4p")
UPSTREAM_SILENCE = 1.0
"""Seconds the upstream says nothing before it answers: longer than the idle timeout under test."""
IDLE_TIMEOUT = "0.3s"
REQUESTS = 8


def check(admin_url: str) -> list[Finding]:
    endpoints = EndpointResolver(http=http_endpoint, envoy_admin_urls={POD: admin_url})
    return envoy(CheckContext(snapshot=Snapshot(), thresholds=Thresholds(), endpoints=endpoints))


def _manager(listener: dict[str, Any]) -> dict[str, Any]:
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def outbound_with_idle_timeout(route_idle_timeout: str | None) -> dict[str, Any]:
    """The outbound port as istiod builds it (stream_idle_timeout 0s, listener_builder.go), with a route
    idle_timeout when an EnvoyFilter has patched one in."""
    route = s.route()
    if route_idle_timeout is not None:
        route["route"]["idle_timeout"] = route_idle_timeout
    listener = s.outbound_listener([s.service_vhost(route)])
    _manager(listener)["stream_idle_timeout"] = "0s"
    return listener


def inbound_with_idle_timeout(stream_idle_timeout: str) -> dict[str, Any]:
    """The pod's inbound port with a connection-manager-wide stream_idle_timeout (ProxyConfig connectionSettings
    httpStreamIdleTimeout, or an EnvoyFilter on the connection manager)."""
    listener = s.inbound_listener()
    _manager(listener)["stream_idle_timeout"] = stream_idle_timeout
    return listener


def send_concurrently(proxy: RunningEnvoy, listener: str, count: int) -> list[int]:
    """``count`` GETs at once (each waits for the silent upstream); their statuses."""
    url = f"http://127.0.0.1:{proxy.listener_ports[listener]}/"
    with httpx.Client(timeout=10, limits=httpx.Limits(max_connections=count)) as client, \
            ThreadPoolExecutor(max_workers=count) as pool:
        answers = list(pool.map(lambda _: client.get(url, headers={"Host": s.SERVICE}), range(count)))
    return [a.status_code for a in answers]


@pytest.fixture
def lab(envoy_binary: str, tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(binary=envoy_binary, workdir=tmp_path)
    yield lab
    lab.close()


SidecarBuilder = Callable[[Lab], tuple[RunningEnvoy, str]]


def route_idle_timeout_on_outbound(lab: Lab) -> tuple[RunningEnvoy, str]:
    upstream = lab.upstream(delay=UPSTREAM_SILENCE)
    proxy = lab.start([outbound_with_idle_timeout(IDLE_TIMEOUT)], [s.outbound_cluster(upstream)])
    return proxy, f"0.0.0.0_{s.PORT}"


def stream_idle_timeout_on_inbound(lab: Lab) -> tuple[RunningEnvoy, str]:
    upstream = lab.upstream(delay=UPSTREAM_SILENCE)
    proxy = lab.start([inbound_with_idle_timeout(IDLE_TIMEOUT)], [s.inbound_cluster(upstream)])
    return proxy, f"0.0.0.0_{s.INBOUND_PORT}"


@pytest.mark.envoy
@pytest.mark.parametrize("build", [route_idle_timeout_on_outbound, stream_idle_timeout_on_inbound],
                         ids=["route-idle-timeout-outbound", "stream-idle-timeout-inbound"])
def test_silent_upstream_cut_by_an_idle_timeout_is_found_with_its_cause(lab: Lab, build: SidecarBuilder) -> None:
    proxy, listener = build(lab)

    statuses = send_concurrently(proxy, listener, REQUESTS)
    findings = check(proxy.admin_url)

    # Envoy answers 504 when the whole request was received and the upstream stayed silent (maybeRequestTimeoutCode).
    assert statuses == [504] * REQUESTS
    assert [f.code for f in findings] == ["MB4032"]
    finding = findings[0]
    assert finding.level is Level.ERROR
    assert f"{REQUESTS} of {REQUESTS} requests" in finding.message
    assert FAILURE_MODES["MB4032"].cause("idle-timeout-set").state in finding.message
    assert finding.remediation is not None and "proxy-config listener" in (finding.remediation.command or "")


@pytest.mark.envoy
def test_istio_default_idle_timeout_off_lets_the_same_slow_upstream_answer(lab: Lab) -> None:
    upstream = lab.upstream(delay=UPSTREAM_SILENCE)
    proxy = lab.start([outbound_with_idle_timeout(None)], [s.outbound_cluster(upstream)])

    statuses = send_concurrently(proxy, f"0.0.0.0_{s.PORT}", REQUESTS)

    assert statuses == [200] * REQUESTS
    assert check(proxy.admin_url) == []


@pytest.mark.envoy
def test_under_istios_default_stats_matcher_the_cut_requests_read_as_abandoned_naming_the_idle_timeout(
        envoy_binary: str, tmp_path: Path) -> None:
    lab = Lab(binary=envoy_binary, workdir=tmp_path, istio_defaults_only=True)
    try:
        proxy, listener = route_idle_timeout_on_outbound(lab)
        send_concurrently(proxy, listener, REQUESTS)
        findings = check(proxy.admin_url)
    finally:
        lab.close()

    # Istio's matcher exports no connection-manager counter: the cut upstream requests read as abandoned (DC, from
    # /clusters), whose cause names the idle timeout, and the check says which stats it could not read.
    assert [f.code for f in findings] == ["MB4019", "MB4012"]
    assert "idle timeout" in findings[0].message


def test_a_few_idle_timeouts_among_many_requests_are_background() -> None:
    stats = parse_stats("http.outbound_0.0.0.0_8080;.downstream_rq_total: 5000\n"
                        "http.outbound_0.0.0.0_8080;.downstream_rq_idle_timeout: 6\n")

    findings = check_stats(stats)

    assert findings == []


def test_idle_timeouts_on_one_port_name_that_port() -> None:
    stats = parse_stats("http.inbound_0.0.0.0_9080;.downstream_rq_total: 40\n"
                        "http.inbound_0.0.0.0_9080;.downstream_rq_idle_timeout: 40\n"
                        "http.outbound_0.0.0.0_8080;.downstream_rq_total: 40\n")

    findings = check_stats(stats)

    assert [f.message.split(" were ")[0] for f in findings] == [
        f"Envoy in {POD}: 40 of 40 requests on inbound port 9080"]


def check_stats(stats: EnvoyStats) -> list[Finding]:
    return list(idle_timeout_findings(POD, stats, Thresholds()))
