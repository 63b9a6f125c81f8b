"""The mesh-endpoint HTTP client builds its TLS context once per CA source, not once per request, and still
verifies https servers against the CA it was given."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from commands.clients.http import HttpEndpoint
from commands.errors import TransientError, UserError
from tests.support.certs import Minted, mint
from tests.support.http_server import start_server


class _Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keeps the connection open, as Envoy's admin and Prometheus do

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args: Any) -> None:
        pass


def _https_server(tmp_path: Path, ca: Minted) -> tuple[str, ThreadingHTTPServer]:
    """A real TLS server on a free loopback port, its certificate for ``localhost`` signed by ``ca``."""
    leaf = mint("localhost", issuer=ca, dns_names=("localhost",))
    (tmp_path / "server.pem").write_text(leaf.cert_pem + leaf.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return f"https://localhost:{server.server_address[1]}", server


@pytest.fixture
def ca() -> Minted:
    return mint("meshbot test root", is_ca=True)


@pytest.fixture
def https(tmp_path: Path, ca: Minted) -> Iterator[str]:
    url, server = _https_server(tmp_path, ca)
    yield url
    server.shutdown()


def _ca_file(tmp_path: Path, ca: Minted, name: str = "ca.pem") -> str:
    path = tmp_path / name
    path.write_text(ca.cert_pem)
    return str(path)


def test_requests_from_new_endpoints_share_one_tls_context_per_ca_file(tmp_path, ca, https) -> None:
    ca_file = _ca_file(tmp_path, ca)
    context = HttpEndpoint(https, ca_file=ca_file).tls_context()
    before = context.session_stats()["connect"]

    # Each request builds its own client (and connection), as the endpoint resolver does per question.
    answers = [HttpEndpoint(https, ca_file=ca_file, timeout=5).get_text("/server_info") for _ in range(2)]

    assert answers == ["hello", "hello"]
    assert context.session_stats()["connect"] - before == 2  # both handshakes ran on the context built first


def test_a_kept_client_asks_again_on_its_open_connection_from_any_thread(tmp_path, ca, https) -> None:
    endpoint = HttpEndpoint(https, ca_file=_ca_file(tmp_path, ca), timeout=5, keep_client=True)
    context = endpoint.tls_context()
    before = context.session_stats()["connect"]
    try:
        assert endpoint.get_text("/api/v1/query") == "hello"
        second: list[str] = []
        asker = threading.Thread(target=lambda: second.append(endpoint.get_text("/api/v1/query_range")))
        asker.start()
        asker.join(timeout=10)
    finally:
        endpoint.close()

    assert second == ["hello"]
    assert context.session_stats()["connect"] - before == 1  # one handshake: the second question reused it


def test_https_to_a_server_another_ca_signed_is_still_refused(tmp_path, https) -> None:
    stranger = _ca_file(tmp_path, mint("someone else's root", is_ca=True), "other.pem")
    with pytest.raises(TransientError, match="CERTIFICATE_VERIFY_FAILED"):
        HttpEndpoint(https, ca_file=stranger, timeout=5).get_text("/server_info")


def test_a_ca_file_rewritten_in_place_is_read_again(tmp_path, ca) -> None:
    ca_file = _ca_file(tmp_path, mint("the old root", is_ca=True))
    stale = HttpEndpoint("https://localhost:1", ca_file=ca_file).tls_context()
    _ca_file(tmp_path, ca)  # a mounted CA Secret rotates in place
    url, server = _https_server(tmp_path, ca)
    try:
        endpoint = HttpEndpoint(url, ca_file=ca_file, timeout=5)
        assert endpoint.get_text("/server_info") == "hello"
        assert endpoint.tls_context() is not stale
    finally:
        server.shutdown()


def test_an_unreadable_ca_file_is_reported_as_before(tmp_path) -> None:
    with pytest.raises(UserError, match="cannot read the CA file .*missing.pem"):
        HttpEndpoint("https://localhost:1", ca_file=str(tmp_path / "missing.pem")).get_text("/")


def test_plain_http_on_loopback_loads_no_ca_bundle_and_its_context_trusts_nothing() -> None:
    state, server = start_server()
    state.answer("/stats", "cluster.x.upstream_rq_503: 7")
    try:
        endpoint = HttpEndpoint(state.url)
        assert endpoint.get_text("/stats") == "cluster.x.upstream_rq_503: 7"
        context = endpoint.tls_context()
        assert context.cert_store_stats()["x509_ca"] == 0  # certifi's ~150 roots were never loaded
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname  # and it fails closed
    finally:
        server.shutdown()


def test_https_without_a_ca_file_uses_one_context_with_the_default_roots() -> None:
    first, second = HttpEndpoint("https://localhost:1"), HttpEndpoint("https://127.0.0.1:2")
    assert first.tls_context() is second.tls_context()
    assert first.tls_context().cert_store_stats()["x509_ca"] > 0
