"""One real-Envoy case per row of the response-flag table: a sidecar-shaped Envoy driven into the failure, and a
healthy twin of the same shape.  ``capture_all`` stores what the check reads under tests/data/envoy-<case>/
(``python scripts/capture_envoy_cases.py`` regenerates them); tests/test_envoy_flags.py runs the same cases live.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from commands.checks.envoy import STATS_INCLUSION_REGEX
from tests.support import loopback
from tests.support import sidecar as s
from tests.support.certs import mint
from tests.support.envoy import RunningEnvoy, istio_stats_config, start_envoy
from tests.support.loopback import loopback_client

DATA = Path(__file__).resolve().parent.parent / "data"
CAPTURED_PATHS = {"/stats": "stats.txt", "/clusters?format=json": "clusters.json", "/memory": "memory.json"}


@dataclass
class Lab:
    """Starts sidecar-shaped Envoys and misbehaving upstreams; ``close`` stops every one of them."""

    binary: str
    workdir: Path
    envoys: list[RunningEnvoy] = field(default_factory=list)
    upstreams: list[s.Upstream] = field(default_factory=list)
    silent_ports: list[s.SilentPort] = field(default_factory=list)
    istio_defaults_only: bool = False
    """Istio's default stats matcher alone (no proxyStatsMatcher), as a sidecar nobody tuned."""

    def upstream(self, mode: str = "ok", *, delay: float = 0.0, tls: tuple[Path, Path] | None = None) -> int:
        upstream = s.Upstream(mode=mode, delay=delay, tls=tls)
        self.upstreams.append(upstream)
        return upstream.port

    def silent_port(self) -> int:
        port = s.SilentPort()
        self.silent_ports.append(port)
        return port.port

    def start(self, listeners: list[dict[str, Any]], clusters: list[dict[str, Any]],
              **extra: Any) -> RunningEnvoy:
        workdir = self.workdir / f"envoy-{len(self.envoys)}"
        workdir.mkdir(parents=True)
        inclusions = () if self.istio_defaults_only else (STATS_INCLUSION_REGEX,)
        # istiod's bootstrap names the node sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local; xDS needs one.
        config = {"node": {"id": "sidecar~10.0.0.7~api.prod~prod.svc.cluster.local", "cluster": "api.prod"},
                  "admin": {"address": s.address(0)}, "stats_config": istio_stats_config(*inclusions),
                  "static_resources": {"listeners": listeners, "clusters": clusters}, **extra}
        envoy = start_envoy(self.binary, workdir, config)
        self.envoys.append(envoy)
        return envoy

    def close(self) -> None:
        for envoy in self.envoys:
            envoy.stop()
        for upstream in self.upstreams:
            upstream.stop()
        for port in self.silent_ports:
            port.stop()


def port_of(envoy: RunningEnvoy, listener: str = f"0.0.0.0_{s.PORT}") -> int:
    return envoy.listener_ports[listener]


def send(envoy: RunningEnvoy, count: int, *, host: str = s.SERVICE, listener: str = f"0.0.0.0_{s.PORT}",
         timeout: float = 10.0) -> list[int]:
    """``count`` sequential GETs through a listener; their statuses (0 when the caller gave up)."""
    statuses = []
    with loopback_client(timeout=timeout) as client:
        for _ in range(count):
            try:
                statuses.append(client.get(f"http://127.0.0.1:{port_of(envoy, listener)}/",
                                           headers={"Host": host}).status_code)
            except httpx.TimeoutException:
                statuses.append(0)
    return statuses


def send_together(envoy: RunningEnvoy, count: int) -> list[int]:
    """``count`` concurrent GETs through the outbound listener, each on its own connection; their statuses.  For a
    healthy twin whose upstream is slow on purpose: the same requests, without waiting out each delay in turn."""
    with loopback_client(timeout=10, limits=httpx.Limits(max_connections=count)) as client, \
            ThreadPoolExecutor(max_workers=count) as pool:
        url = f"http://127.0.0.1:{port_of(envoy)}/"
        return list(pool.map(lambda _: client.get(url, headers={"Host": s.SERVICE}).status_code, range(count)))


def tcp_connections(envoy: RunningEnvoy, listener: str, count: int) -> None:
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port_of(envoy, listener)), timeout=5) as connection:
            connection.sendall(b"GET / HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n")
            connection.settimeout(5)
            # Until the proxy or the upstream closes it; BlackHoleCluster's close may arrive as a reset.
            with contextlib.suppress(ConnectionResetError):
                while connection.recv(4096):
                    pass


def wait_for(envoy: RunningEnvoy, condition: Callable[[str], bool], timeout: float = 10.0) -> None:
    """Poll ``/stats`` until ``condition(text)`` holds (counters are flushed asynchronously)."""
    deadline = time.monotonic() + timeout
    while not condition(text := loopback.get(f"{envoy.admin_url}/stats").text):
        if time.monotonic() > deadline:
            raise AssertionError(f"Envoy's stats never reached the expected state:\n{text[-2000:]}")
        time.sleep(0.05)


def stat(name: str, value: int) -> Callable[[str], bool]:
    return lambda text: f"{name}: {value}\n" in text + "\n"


# -- the cases: each builds the failing sidecar (healthy=False) or its healthy twin (healthy=True) -----------

def overflow(lab: Lab, healthy: bool) -> RunningEnvoy:
    """UO: limits of 1 and 25 concurrent requests to an upstream that holds them (a stuck dependency)."""
    port = lab.upstream(delay=0.0 if healthy else 30.0)
    limit = 50 if healthy else 1
    envoy = lab.start([s.outbound_listener([s.service_vhost()])], [s.outbound_cluster(port, max_requests=limit)])
    if healthy:
        send(envoy, 20)
        return envoy
    client = loopback_client(timeout=40, limits=httpx.Limits(max_connections=25))
    pool = ThreadPoolExecutor(max_workers=25)
    requests = [pool.submit(client.get, f"http://127.0.0.1:{port_of(envoy)}/", headers={"Host": s.SERVICE})
                for _ in range(25)]
    # 1 request at the upstream, 1 pending, 23 refused at once; stopping Envoy later ends the held ones.
    deadline = time.monotonic() + 10
    while sum(r.done() for r in requests) < 23:
        assert time.monotonic() < deadline, "the circuit breaker did not refuse 23 requests"
        time.sleep(0.02)
    pool.shutdown(wait=False)
    return envoy


def _hosts_total(envoy: RunningEnvoy, counter: str) -> int:
    answer = loopback.get(f"{envoy.admin_url}/clusters?format=json").json()
    return sum(int(stat_.get("value", 0)) for c in answer["cluster_statuses"] for h in c.get("host_statuses", [])
               for stat_ in h["stats"] if stat_["name"] == counter)


def idle(lab: Lab, healthy: bool) -> RunningEnvoy:
    """Silence is earned: a sidecar nobody has called yet (healthy: 20 good requests)."""
    envoy = lab.start([s.outbound_listener([s.service_vhost()])], [s.outbound_cluster(lab.upstream())])
    if healthy:
        send(envoy, 20)
    return envoy


def outlier_ejected(lab: Lab, healthy: bool) -> RunningEnvoy:
    """UH: the only endpoint answers 503, outlierDetection consecutive5xxErrors 3 ejects it."""
    port = lab.upstream("ok" if healthy else "fail")
    envoy = lab.start([s.outbound_listener([s.service_vhost()])], [s.outbound_cluster(port, outlier_5xx=3)])
    send(envoy, 20)
    return envoy


def no_endpoints(lab: Lab, healthy: bool) -> RunningEnvoy:
    """UH: the service has no endpoints (no ready pod, or a subset that selects none)."""
    port = lab.upstream() if healthy else None
    envoy = lab.start([s.outbound_listener([s.service_vhost()])], [s.outbound_cluster(port)])
    send(envoy, 20)
    return envoy


def not_ready(lab: Lab, healthy: bool) -> RunningEnvoy:
    """UH: the only endpoint is not ready (EDS UNHEALTHY) under PILOT_SEND_UNHEALTHY_ENDPOINTS."""
    port = lab.upstream()
    envoy = lab.start([s.outbound_listener([s.service_vhost()])],
                      [s.outbound_cluster(port, health="HEALTHY" if healthy else "UNHEALTHY")])
    send(envoy, 20)
    return envoy


def connect_refused(lab: Lab, healthy: bool) -> RunningEnvoy:
    """UF: the endpoint's port has no listener (wrong targetPort)."""
    port = lab.upstream() if healthy else s.closed_port()
    envoy = lab.start([s.outbound_listener([s.service_vhost()])], [s.outbound_cluster(port)])
    send(envoy, 20)
    return envoy


def connect_timeout(lab: Lab, healthy: bool) -> RunningEnvoy:
    """UF (timeout): the endpoint never answers the handshake, as behind a firewall that drops packets; the
    cluster's connect timeout is 0.25 s (DestinationRule connectionPool.tcp.connectTimeout)."""
    port = lab.upstream() if healthy else lab.silent_port()
    envoy = lab.start([s.outbound_listener([s.service_vhost()])],
                      [s.outbound_cluster(port, connect_timeout="0.25s")])
    send(envoy, 6)
    return envoy


def app_not_listening(lab: Lab, healthy: bool) -> RunningEnvoy:
    """UF on the pod's own port: the application does not listen where its sidecar forwards (inbound|9080||)."""
    port = lab.upstream() if healthy else s.closed_port()
    envoy = lab.start([s.inbound_listener()], [s.inbound_cluster(port)])
    send(envoy, 20, listener=f"0.0.0.0_{s.INBOUND_PORT}")
    return envoy


def _tls_case(lab: Lab, healthy: bool, *, wrong: str) -> RunningEnvoy:
    """``wrong``: ``ca`` (another root signed the peer), ``san`` (another identity), ``plaintext`` (no TLS at all)."""
    mesh_root = mint("mesh-root", is_ca=True)
    signer = mint("other-root", is_ca=True) if wrong == "ca" and not healthy else mesh_root
    identity = "reviews" if wrong == "san" and not healthy else "payment"
    leaf = mint("payment", issuer=signer, uris=(s.SPIFFE.format(identity),))
    directory = lab.workdir / f"tls-{len(lab.upstreams)}"
    directory.mkdir(parents=True)
    for name, text in (("ca.pem", mesh_root.cert_pem), ("cert.pem", leaf.cert_pem), ("key.pem", leaf.key_pem)):
        (directory / name).write_text(text)
    plaintext = wrong == "plaintext" and not healthy
    port = lab.upstream(tls=None if plaintext else (directory / "cert.pem", directory / "key.pem"))
    tls = s.upstream_tls(str(directory / "ca.pem"), s.SPIFFE.format("payment"))
    envoy = lab.start([s.outbound_listener([s.service_vhost()])], [s.outbound_cluster(port, tls=tls)])
    send(envoy, 20)
    return envoy


def wrong_ca(lab: Lab, healthy: bool) -> RunningEnvoy:
    """UF + ssl.fail_verify_error: the destination's certificate chains to another root."""
    return _tls_case(lab, healthy, wrong="ca")


def wrong_san(lab: Lab, healthy: bool) -> RunningEnvoy:
    """UF + ssl.fail_verify_san: the destination presents another service account's identity."""
    return _tls_case(lab, healthy, wrong="san")


def plaintext_peer(lab: Lab, healthy: bool) -> RunningEnvoy:
    """UF + ssl.connection_error: the destination answers in plaintext (no sidecar) while ISTIO_MUTUAL is sent."""
    return _tls_case(lab, healthy, wrong="plaintext")


def retries_exhausted(lab: Lab, healthy: bool) -> RunningEnvoy:
    """URX: two retries on 5xx against an upstream that always answers 503."""
    port = lab.upstream("ok" if healthy else "fail")
    envoy = lab.start([s.outbound_listener([s.service_vhost(s.route(retries=2))])], [s.outbound_cluster(port)])
    send(envoy, 20)
    return envoy


def upstream_timeout(lab: Lab, healthy: bool) -> RunningEnvoy:
    """UT: the upstream takes 0.3 s and the route allows 0.05 s (healthy: 5 s)."""
    port = lab.upstream(delay=0.3)
    timeout = "5s" if healthy else "0.05s"
    envoy = lab.start([s.outbound_listener([s.service_vhost(s.route(timeout=timeout))])], [s.outbound_cluster(port)])
    if healthy:
        assert send_together(envoy, 6) == [200] * 6
    else:
        send(envoy, 6)
    return envoy


def upstream_reset(lab: Lab, healthy: bool) -> RunningEnvoy:
    """UC: the upstream reads the request and closes the connection without answering."""
    port = lab.upstream("ok" if healthy else "reset")
    envoy = lab.start([s.outbound_listener([s.service_vhost()])], [s.outbound_cluster(port)])
    send(envoy, 20)
    return envoy


def caller_gone(lab: Lab, healthy: bool) -> RunningEnvoy:
    """DC: callers give up after 0.1 s on an upstream that takes 0.5 s (healthy: they wait)."""
    port = lab.upstream(delay=0.5)
    envoy = lab.start([s.outbound_listener([s.service_vhost()])], [s.outbound_cluster(port)])
    if healthy:
        assert send_together(envoy, 6) == [200] * 6
    else:
        send(envoy, 6, timeout=0.1)
    # The upstream requests end when Envoy resets them; wait until no request is in flight any more.
    deadline = time.monotonic() + 10
    while _hosts_total(envoy, "rq_active") and time.monotonic() < deadline:
        time.sleep(0.05)
    return envoy


def no_route(lab: Lab, healthy: bool) -> RunningEnvoy:
    """NR: the caller's Host matches no virtual host on the port (only the service's own names do)."""
    port = lab.upstream()
    envoy = lab.start([s.outbound_listener([s.service_vhost(domains=(s.SERVICE, "payment.prod"))])],
                      [s.outbound_cluster(port)])
    send(envoy, 20, host=s.SERVICE if healthy else "payments.prod.svc.cluster.local")
    return envoy


def no_cluster(lab: Lab, healthy: bool) -> RunningEnvoy:
    """NC: the route names subset v2's cluster, which no DestinationRule created."""
    port = lab.upstream()
    target = s.CLUSTER if healthy else f"outbound|{s.PORT}|v2|{s.SERVICE}"
    envoy = lab.start([s.outbound_listener([s.service_vhost(s.route(target))])], [s.outbound_cluster(port)])
    send(envoy, 20)
    return envoy


def rbac_denied(lab: Lab, healthy: bool) -> RunningEnvoy:
    """403: an ALLOW policy on the inbound port that the caller does not match."""
    port = lab.upstream()
    envoy = lab.start([s.inbound_rbac_listener(port, deny=not healthy)], [s.inbound_cluster(port)])
    send(envoy, 20, listener=f"0.0.0.0_{s.INBOUND_PORT}")
    return envoy


def rbac_dry_run(lab: Lab, healthy: bool) -> RunningEnvoy:
    """Not an outage: a dry-run policy would deny every request, the enforced one allows them."""
    port = lab.upstream()
    envoy = lab.start([s.inbound_rbac_listener(port, deny=False, shadow_deny=not healthy)], [s.inbound_cluster(port)])
    send(envoy, 20, listener=f"0.0.0.0_{s.INBOUND_PORT}")
    return envoy


def _ext_authz(lab: Lab, authorizer_port: int) -> RunningEnvoy:
    app = lab.upstream()
    envoy = lab.start([s.inbound_ext_authz_listener()],
                      [s.inbound_cluster(app), s.outbound_cluster(authorizer_port, name=s.AUTHZ_CLUSTER)])
    send(envoy, 20, listener=f"0.0.0.0_{s.INBOUND_PORT}")
    return envoy


def ext_authz_denied(lab: Lab, healthy: bool) -> RunningEnvoy:
    """UAEX: a CUSTOM policy's authorizer answers 403 to every check (healthy: 200)."""
    return _ext_authz(lab, lab.upstream("ok" if healthy else "forbid"))


def ext_authz_down(lab: Lab, healthy: bool) -> RunningEnvoy:
    """UAEX: the authorizer's endpoint refuses connections, failOpen is false: every request is denied."""
    return _ext_authz(lab, lab.upstream() if healthy else s.closed_port())


def blackhole_tcp(lab: Lab, healthy: bool) -> RunningEnvoy:
    """REGISTRY_ONLY (TCP): connections to an unregistered destination go to BlackHoleCluster (healthy: ALLOW_ANY
    sends them through PassthroughCluster)."""
    port = lab.upstream()
    cluster = s.passthrough_cluster(port) if healthy else s.blackhole_cluster()
    envoy = lab.start([s.blackhole_tcp_listener(cluster["name"])], [cluster])
    tcp_connections(envoy, "virtualOutbound-blackhole", 6)
    return envoy


def passthrough_refused(lab: Lab, healthy: bool) -> RunningEnvoy:
    """ALLOW_ANY: connections to an unregistered destination leave through PassthroughCluster and are refused
    there (the destination is down, or a firewall rejects the cluster's egress)."""
    port = lab.upstream() if healthy else s.closed_port()
    cluster = s.passthrough_cluster(port)
    envoy = lab.start([s.blackhole_tcp_listener(cluster["name"])], [cluster])
    tcp_connections(envoy, "virtualOutbound-blackhole", 6)
    return envoy


def blackhole_http(lab: Lab, healthy: bool) -> RunningEnvoy:
    """REGISTRY_ONLY (HTTP): a Host with no ServiceEntry meets the block_all virtual host and a direct 502."""
    port = lab.upstream()
    envoy = lab.start([s.outbound_listener([s.service_vhost(domains=(s.SERVICE,)), s.block_all_vhost()])],
                      [s.outbound_cluster(port)])
    send(envoy, 20, host=s.SERVICE if healthy else "api.example.com")
    return envoy


def cds_rejected(lab: Lab, healthy: bool) -> RunningEnvoy:
    """A pushed cluster update Envoy refuses (an invalid connect timeout, as a broken EnvoyFilter patch makes)."""
    return _xds_rejected(lab, healthy, rejected="cds")


def lds_rejected(lab: Lab, healthy: bool) -> RunningEnvoy:
    """A pushed listener update Envoy refuses (a Lua filter whose script does not compile, as an EnvoyFilter
    with a broken Lua patch makes)."""
    return _xds_rejected(lab, healthy, rejected="lds")


def _xds_rejected(lab: Lab, healthy: bool, *, rejected: str) -> RunningEnvoy:
    workdir = lab.workdir / f"xds-{len(lab.envoys)}"
    workdir.mkdir(parents=True)
    port = lab.upstream()
    s.write_xds(workdir / "cds.json", [s.outbound_cluster(port)], s.CLUSTER_TYPE)
    s.write_xds(workdir / "lds.json", [s.outbound_listener([s.service_vhost()])], s.LISTENER_TYPE)
    envoy = lab.start([], [], **s.xds_files_bootstrap(workdir))
    wait_for(envoy, stat("listener_manager.lds.update_success", 1))
    envoy.listener_ports = {f"0.0.0.0_{s.PORT}": _listener_port(envoy)}
    send(envoy, 20)
    if rejected == "cds":
        s.write_xds(workdir / "cds.json", [s.outbound_cluster(port, connect_timeout="5s" if healthy else "-1s")],
                    s.CLUSTER_TYPE)
        manager = "cluster_manager.cds"
    else:
        listener = s.outbound_listener([s.service_vhost()])
        if not healthy:
            manager_config = listener["filter_chains"][0]["filters"][0]["typed_config"]
            manager_config["http_filters"].insert(0, {"name": "envoy.filters.http.lua", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {"inline_string": "function envoy_on_request(handle"}}})
        s.write_xds(workdir / "lds.json", [listener], s.LISTENER_TYPE)
        manager = "listener_manager.lds"
    wait_for(envoy, stat(f"{manager}.update_success", 2) if healthy else stat(f"{manager}.update_rejected", 1))
    return envoy


_LOCAL_RATE_LIMIT = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
_FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
_ALWAYS = {"numerator": 100, "denominator": "HUNDRED"}


def _before_router(listener: dict[str, Any], http_filter: dict[str, Any]) -> dict[str, Any]:
    listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"].insert(0, http_filter)
    return listener


def local_rate_limited(lab: Lab, healthy: bool) -> RunningEnvoy:
    """RL: the EnvoyFilter of Istio's rate limit task (istio.io/latest/docs/tasks/policy-enforcement/rate-limit/,
    stat prefix http_local_rate_limiter, enabled and enforced for every request) with a bucket of 4 tokens a minute;
    the healthy twin's bucket holds 1000."""
    tokens = 1000 if healthy else 4
    listener = _before_router(s.outbound_listener([s.service_vhost()]), {
        "name": "envoy.filters.http.local_ratelimit", "typed_config": {
            "@type": _LOCAL_RATE_LIMIT, "stat_prefix": "http_local_rate_limiter",
            "token_bucket": {"max_tokens": tokens, "tokens_per_fill": tokens, "fill_interval": "60s"},
            "filter_enabled": {"runtime_key": "local_rate_limit_enabled", "default_value": _ALWAYS},
            "filter_enforced": {"runtime_key": "local_rate_limit_enforced", "default_value": _ALWAYS}}})
    envoy = lab.start([listener], [s.outbound_cluster(lab.upstream())])
    send(envoy, 20)
    return envoy


def fault_aborted(lab: Lab, healthy: bool) -> RunningEnvoy:
    """FI: a VirtualService fault abort (httpStatus 503, percentage 100) as istiod renders it: the fault filter first
    in the connection manager and the route's HTTPFault from TranslateFault (pilot/pkg/networking/core/route/
    route.go), percentage as a per-million fraction; the healthy twin's percentage is 0."""
    fault = {"@type": _FAULT, "abort": {"http_status": 503, "percentage": {
        "numerator": 0 if healthy else 1_000_000, "denominator": "MILLION"}}}
    routed = dict(s.route(), typed_per_filter_config={"envoy.filters.http.fault": fault})
    listener = _before_router(s.outbound_listener([s.service_vhost(routed)]),
                              {"name": "envoy.filters.http.fault", "typed_config": {"@type": _FAULT}})
    envoy = lab.start([listener], [s.outbound_cluster(lab.upstream())])
    send(envoy, 20)
    return envoy


def _listener_port(envoy: RunningEnvoy) -> int:
    statuses = envoy.admin_json("/listeners?format=json")["listener_statuses"]
    return int(statuses[0]["local_address"]["socket_address"]["port_value"])


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Lab, bool], RunningEnvoy]
    expect: tuple[str, ...]
    """The codes the failing sidecar must produce (exactly these, most severe first)."""
    istio_defaults_only: bool = False
    config_dump: bool = False
    """Also capture /config_dump (the check reads it for block_all)."""

    @property
    def directory(self) -> Path:
        return DATA / f"envoy-{self.name}"


CASES = (
    Case("no-traffic", idle, ("MB4026",)),
    Case("uo-overflow", overflow, ("MB4001", "MB4002")),
    Case("uo-overflow-istio-defaults", overflow, ("MB4012",), istio_defaults_only=True),
    Case("uh-outlier", outlier_ejected, ("MB4013", "MB4002")),
    Case("uh-outlier-istio-defaults", outlier_ejected, ("MB4013", "MB4012"), istio_defaults_only=True),
    Case("uh-no-endpoints", no_endpoints, ("MB4013", "MB4002")),
    Case("uh-not-ready", not_ready, ("MB4013", "MB4002")),
    Case("uf-refused", connect_refused, ("MB4014", "MB4002")),
    Case("uf-connect-timeout", connect_timeout, ("MB4014",)),
    Case("uf-app-not-listening", app_not_listening, ("MB4014", "MB4002")),
    Case("uf-refused-istio-defaults", connect_refused, ("MB4014", "MB4012"), istio_defaults_only=True),
    Case("tls-wrong-ca", wrong_ca, ("MB4015", "MB4002")),
    Case("tls-wrong-san", wrong_san, ("MB4015", "MB4002")),
    Case("tls-plaintext-peer", plaintext_peer, ("MB4015", "MB4002")),
    Case("urx-retries", retries_exhausted, ("MB4003", "MB4016", "MB4002")),
    Case("ut-timeout", upstream_timeout, ("MB4017",)),
    Case("uc-reset", upstream_reset, ("MB4018", "MB4002")),
    Case("dc-caller-gone", caller_gone, ("MB4019",)),
    Case("nr-no-route", no_route, ("MB4020",)),
    Case("nc-no-cluster", no_cluster, ("MB4021",)),
    Case("rbac-denied", rbac_denied, ("MB4022",)),
    Case("rbac-dry-run", rbac_dry_run, ("MB4023",)),
    Case("uaex-denied", ext_authz_denied, ("MB4028",)),
    # The authorizer is an ordinary service: its connect failures show too, and name where to look.
    Case("uaex-authorizer-down", ext_authz_down, ("MB4014", "MB4002", "MB4028")),
    Case("blackhole-tcp", blackhole_tcp, ("MB4024",)),
    Case("blackhole-http", blackhole_http, ("MB4024",), config_dump=True),
    Case("passthrough-refused", passthrough_refused, ("MB4029",)),
    Case("cds-rejected", cds_rejected, ("MB4025",)),
    Case("lds-rejected", lds_rejected, ("MB4025",)),
    Case("rl-local-limit", local_rate_limited, ("MB4030",)),
    Case("fi-abort", fault_aborted, ("MB4031",)),
)
CASES_BY_NAME = {case.name: case for case in CASES}


def run_case(binary: str, workdir: Path, case: Case, *, healthy: bool) -> tuple[Lab, RunningEnvoy]:
    """Start the case's sidecar and drive it; the caller closes the Lab."""
    lab = Lab(binary=binary, workdir=workdir, istio_defaults_only=case.istio_defaults_only)
    try:
        return lab, case.build(lab, healthy)
    except BaseException:
        lab.close()
        raise


def capture(envoy: RunningEnvoy, case: Case, directory: Path) -> None:
    """Write what the check reads from ``envoy`` into ``directory`` (JSON pretty-printed, stable order)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = dict(CAPTURED_PATHS, **({"/config_dump": "config_dump.json"} if case.config_dump else {}))
    for path, filename in paths.items():
        answer = loopback.get(f"{envoy.admin_url}{path}", timeout=10)
        answer.raise_for_status()
        text = answer.text if filename.endswith(".txt") else json.dumps(answer.json(), indent=1, sort_keys=True)
        (directory / filename).write_text(text if text.endswith("\n") else text + "\n")


def capture_all(binary: str, workdir: Path, names: tuple[str, ...] = ()) -> list[Path]:
    written = []
    for case in CASES:
        if names and case.name not in names:
            continue
        lab, envoy = run_case(binary, workdir / case.name, case, healthy=False)
        try:
            capture(envoy, case, case.directory)
        finally:
            lab.close()
        written.append(case.directory)
    return written
