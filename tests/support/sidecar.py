"""A real Envoy configured the way istiod configures a sidecar, and the upstreams that make it fail.

The bootstrap copies what matters for the evidence meshbot reads from Istio's code: cluster names
``outbound|PORT||HOST`` with ``alt_stat_name`` ``NAME;`` (pilot/pkg/networking/core/cluster_builder.go
buildCluster, util.DelimitedStatsPrefix), the outbound HTTP listener's stat prefix ``outbound_0.0.0.0_PORT;``
(core/listener.go), the inbound one ``inbound_0.0.0.0_PORT;`` (core/listener_inbound.go StatPrefix),
``BlackHoleCluster`` and the ``block_all`` virtual host of REGISTRY_ONLY (core/cluster_builder.go
buildBlackHoleCluster, core/httproute.go), RBAC shadow rules with the ``istio_dry_run_allow_`` prefix
(pilot/pkg/security/authz/builder/builder.go) and Istio's bootstrap stats matcher (``istio_stats_config``).
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SERVICE = "payment.prod.svc.cluster.local"
PORT = 8080
CLUSTER = f"outbound|{PORT}||{SERVICE}"
INBOUND_PORT = 9080
OUTBOUND_PREFIX = f"outbound_0.0.0.0_{PORT};"
INBOUND_PREFIX = f"inbound_0.0.0.0_{INBOUND_PORT};"
BLACKHOLE = "BlackHoleCluster"
PASSTHROUGH = "PassthroughCluster"
SPIFFE = "spiffe://cluster.local/ns/prod/sa/{}"
_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = {"name": "envoy.filters.http.router",
           "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def outbound_cluster(port: int | None, *, name: str = CLUSTER, health: str | None = None,
                     outlier_5xx: int | None = None, max_requests: int | None = None,
                     tls: dict[str, Any] | None = None, connect_timeout: str = "1s") -> dict[str, Any]:
    """An EDS-like cluster as istiod sends it: one endpoint (none when ``port`` is None)."""
    endpoint: dict[str, Any] = {"endpoint": {"address": address(port)}} if port is not None else {}
    if health and endpoint:
        endpoint["health_status"] = health
    cluster: dict[str, Any] = {
        "name": name, "alt_stat_name": f"{name};", "type": "STATIC", "connect_timeout": connect_timeout,
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint] if endpoint else []}]}}
    if health:
        # istiod sends not-ready endpoints (EDS UNHEALTHY) only for services that support them
        # (PILOT_SEND_UNHEALTHY_ENDPOINTS, model/service.go SupportsUnhealthyEndpoints) and then sets the panic
        # threshold to 0 (cluster_traffic_policy.go), so they take no traffic.
        cluster["common_lb_config"] = {"healthy_panic_threshold": {"value": 0}}
    if outlier_5xx is not None:
        # A DestinationRule outlierDetection as istiod renders it (cluster_traffic_policy.go applyOutlierDetection):
        # consecutive5xxErrors, baseEjectionTime, maxEjectionPercent 100 so the only host can go.
        cluster["outlier_detection"] = {"consecutive_5xx": outlier_5xx, "interval": "1s",
                                        "base_ejection_time": "30s", "max_ejection_percent": 100,
                                        "enforcing_consecutive_gateway_failure": 0,
                                        "enforcing_success_rate": 0}
        # Istio turns Envoy's panic mode off for Kubernetes services (cluster_traffic_policy.go: healthy panic
        # threshold 0), so an ejected host takes no traffic: requests fail "no healthy upstream" (UH).
        cluster["common_lb_config"] = {"healthy_panic_threshold": {"value": 0}}
    if max_requests is not None:
        cluster["circuit_breakers"] = {"thresholds": [{"max_connections": max_requests, "max_pending_requests": 1,
                                                       "max_requests": max_requests}]}
    if tls is not None:
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls",
                                       "typed_config": {"@type": _TLS + "UpstreamTlsContext", **tls}}
    return cluster


def blackhole_cluster() -> dict[str, Any]:
    """istiod's BlackHoleCluster: STATIC with no endpoints, so every connection to it finds no host."""
    return {"name": BLACKHOLE, "alt_stat_name": f"{BLACKHOLE};", "type": "STATIC", "connect_timeout": "1s"}


def route(cluster: str = CLUSTER, *, timeout: str = "10s", retries: int = 0) -> dict[str, Any]:
    action: dict[str, Any] = {"cluster": cluster, "timeout": timeout}
    if retries:
        # Istio's default retry policy retries "connect-failure,refused-stream,unavailable,cancelled,
        # retriable-status-codes" (pilot/pkg/networking/core/route/retry/retry.go); 5xx makes a 503 retriable here.
        action["retry_policy"] = {"retry_on": "5xx,connect-failure", "num_retries": retries,
                                  "retry_back_off": {"base_interval": "0.001s", "max_interval": "0.002s"}}
    return {"match": {"prefix": "/"}, "route": action}


def outbound_listener(virtual_hosts: list[dict[str, Any]], *, name: str = f"0.0.0.0_{PORT}") -> dict[str, Any]:
    manager = {"@type": _HCM, "stat_prefix": OUTBOUND_PREFIX, "http_filters": [_ROUTER],
               # Routes arrive over RDS in a sidecar, where Envoy does not check that their clusters exist.
               "route_config": {"name": str(PORT), "virtual_hosts": virtual_hosts, "validate_clusters": False}}
    return {"name": name, "address": address(0), "filter_chains": [{"filters": [
        {"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}]}


def service_vhost(*routes: dict[str, Any], domains: tuple[str, ...] = ("*",)) -> dict[str, Any]:
    return {"name": f"{SERVICE}:{PORT}", "domains": list(domains), "routes": list(routes) or [route()]}


def block_all_vhost() -> dict[str, Any]:
    """REGISTRY_ONLY's catch-all: a direct 502 (istio/istio pilot/pkg/networking/core/httproute.go)."""
    return {"name": "block_all", "domains": ["*"],
            "routes": [{"name": "block_all", "match": {"prefix": "/"}, "direct_response": {"status": 502}}]}


def passthrough_cluster(port: int) -> dict[str, Any]:
    """ALLOW_ANY's PassthroughCluster (ORIGINAL_DST in istiod's build; one static host stands in for it here)."""
    return outbound_cluster(port, name=PASSTHROUGH)


def blackhole_tcp_listener(cluster: str = BLACKHOLE) -> dict[str, Any]:
    """The virtual outbound listener's catch-all chain: tcp_proxy to BlackHoleCluster under REGISTRY_ONLY, to
    PassthroughCluster under ALLOW_ANY, with the cluster's name as stat prefix (core/listener_builder.go)."""
    proxy = {"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
             "stat_prefix": cluster, "cluster": cluster}
    return {"name": "virtualOutbound-blackhole", "address": address(0), "filter_chains": [{"filters": [
        {"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy}]}]}


def inbound_rbac_listener(upstream_port: int, *, deny: bool, shadow_deny: bool = False) -> dict[str, Any]:
    """An inbound listener whose RBAC filter is what istiod builds from AuthorizationPolicies: ALLOW rules for
    one principal (a caller without it is denied, 403), or a dry-run policy as shadow rules."""
    allowed = {"any": True} if not deny else {"header": {"name": "x-caller", "string_match": {"exact": "orders"}}}
    policy = {"permissions": [{"any": True}], "principals": [allowed]}
    rbac: dict[str, Any] = {"@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                            "rules": {"action": "ALLOW", "policies": {"ns[prod]-policy[payment-allow]-rule[0]": policy}}}
    if shadow_deny:
        rbac["shadow_rules"] = {"action": "ALLOW", "policies": {"ns[prod]-policy[payment-dry-run]-rule[0]": {
            "permissions": [{"any": True}],
            "principals": [{"header": {"name": "x-caller", "string_match": {"exact": "orders"}}}]}}}
        rbac["shadow_rules_stat_prefix"] = "istio_dry_run_allow_"
    return inbound_listener({"name": "envoy.filters.http.rbac", "typed_config": rbac})


def inbound_listener(*filters: dict[str, Any]) -> dict[str, Any]:
    """The pod's inbound HTTP port 9080 (istiod: listener 0.0.0.0_9080 on the virtual inbound listener, stat
    prefix ``inbound_0.0.0.0_9080;``), routing to the app through ``inbound|9080||``; ``filters`` go before
    the router (RBAC, ext_authz)."""
    manager = {"@type": _HCM, "stat_prefix": INBOUND_PREFIX, "http_filters": [*filters, _ROUTER],
               "route_config": {"name": "inbound|9080||", "virtual_hosts": [{
                   "name": "inbound|http|9080", "domains": ["*"], "routes": [route(f"inbound|{INBOUND_PORT}||")]}]}}
    return {"name": f"0.0.0.0_{INBOUND_PORT}", "address": address(0), "filter_chains": [{"filters": [
        {"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}]}


AUTHZ_CLUSTER = "outbound|8000||ext-authz.authz.svc.cluster.local"


def inbound_ext_authz_listener() -> dict[str, Any]:
    """An inbound listener with a CUSTOM AuthorizationPolicy's HTTP ext_authz filter as istiod renders it
    (pilot/pkg/security/authz/builder/extauthz.go generateHTTPConfig: no stat prefix, failOpen false); the
    provider's service is an ordinary outbound cluster."""
    authz = {"@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
             "transport_api_version": "V3", "failure_mode_allow": False,
             "http_service": {"server_uri": {"uri": "http://ext-authz.authz.svc.cluster.local:8000",
                                             "cluster": AUTHZ_CLUSTER, "timeout": "0.6s"}}}
    return inbound_listener({"name": "envoy.filters.http.ext_authz", "typed_config": authz})


def inbound_cluster(port: int) -> dict[str, Any]:
    return outbound_cluster(port, name=f"inbound|{INBOUND_PORT}||")


def upstream_tls(ca_pem_path: str, san: str) -> dict[str, Any]:
    """ISTIO_MUTUAL as istiod renders it: trust the mesh root, accept only the destination's SPIFFE identity
    (pilot/pkg/networking/core/cluster_tls.go, security/pkg/... match_typed_subject_alt_names)."""
    return {"sni": f"outbound_.{PORT}_._.{SERVICE}", "common_tls_context": {
        "alpn_protocols": ["istio-peer-exchange", "istio"],
        "validation_context": {"trusted_ca": {"filename": ca_pem_path},
                               "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": san}}]}}}


def xds_files_bootstrap(workdir: Path) -> dict[str, Any]:
    """CDS and LDS read from files: the same subscription counters (``cluster_manager.cds.update_rejected``,
    ``listener_manager.lds.update_rejected``) an ADS push from istiod moves, without a gRPC server."""
    return {"dynamic_resources": {
        "cds_config": {"resource_api_version": "V3", "path_config_source": {"path": str(workdir / "cds.json")}},
        "lds_config": {"resource_api_version": "V3", "path_config_source": {"path": str(workdir / "lds.json")}}}}


def write_xds(path: Path, resources: list[dict[str, Any]], type_url: str) -> None:
    """Replace an xDS file atomically (Envoy watches for a move into place)."""
    import json

    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"version_info": str(time.monotonic_ns()),
                                     "resources": [{"@type": type_url, **r} for r in resources]}))
    temporary.rename(path)


CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"


# -- upstreams that misbehave in one way each -------------------------------------------------------

def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused (RST), Envoy's connect failure."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SilentPort:
    """A port whose listener never accepts: once its backlog is full the kernel drops new SYNs, so connects
    hang until Envoy's connect timeout, as behind a firewall that drops packets.  Close it when done."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(0)
        self.port = int(self.socket.getsockname()[1])
        # Fill the accept queue so the next SYNs find no room.
        self._fillers = [socket.create_connection(("127.0.0.1", self.port), timeout=1) for _ in range(1)]

    def stop(self) -> None:
        for filler in self._fillers:
            filler.close()
        self.socket.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The status line and headers go out in one write and the body in another: with Nagle's algorithm on, the
    # body waits for Envoy's delayed ACK (40 ms on Linux) on every keep-alive request, 1 s per 20 requests.
    disable_nagle_algorithm = True
    mode = "ok"
    delay = 0.0

    def do_GET(self) -> None:
        if self.server.mode == "reset":  # type: ignore[attr-defined]
            # Read the request, then close without a byte of response: Envoy's "connection termination" (UC).
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if self.server.delay:  # type: ignore[attr-defined]
            time.sleep(self.server.delay)  # type: ignore[attr-defined]
        status = {"fail": 503, "forbid": 403}.get(self.server.mode, 200)  # type: ignore[attr-defined]
        body = b"ok" if status == 200 else b"no"
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the caller went away (DC, UT): nothing to answer

    def log_message(self, *args: Any) -> None:
        pass


class _UpstreamServer(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: eight requests at once to a slow upstream on a loaded machine
    # overflowed it, the dropped SYN was retried after Linux's 1 s, and Envoy's 1 s connect timeout answered 503 UF.
    request_queue_size = 128


@dataclass
class Upstream:
    """A keep-alive HTTP/1.1 upstream: ``ok``, ``fail`` (503), ``forbid`` (403, an authorizer saying no),
    ``reset`` (close before answering), or slow."""

    mode: str = "ok"
    delay: float = 0.0
    tls: tuple[Path, Path] | None = None
    """(certificate chain, key) files: serve HTTPS with them, as the destination's sidecar does mTLS."""
    server: ThreadingHTTPServer = field(init=False)

    def __post_init__(self) -> None:
        self.server = _UpstreamServer(("127.0.0.1", 0), _Handler)
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        self.server.mode = self.mode  # type: ignore[attr-defined]
        self.server.delay = self.delay  # type: ignore[attr-defined]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

