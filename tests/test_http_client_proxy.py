"""A corporate HTTP_PROXY never sees the port-forward bridge's loopback requests; other URLs still follow it.

meshbot reaches Envoy admin through a 127.0.0.1 listener (commands/clients/kube.py's port-forward bridge).
httpx sends requests through HTTP_PROXY/ALL_PROXY unless NO_PROXY lists the host, and a proxy cannot
reach this pod's loopback, so every Envoy read failed behind a proxy (issue 28).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from commands.clients.http import HttpEndpoint, is_loopback
from commands.errors import TransientError
from tests.support.http_server import ProgrammableServer, start_server

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture
def envoy_admin() -> Iterator[ProgrammableServer]:
    """Stands for the local end of a port-forward: a real HTTP server on 127.0.0.1."""
    state, httpd = start_server()
    state.answer("/server_info", {"state": "LIVE"})
    yield state
    httpd.shutdown()


@pytest.fixture
def proxy() -> Iterator[ProgrammableServer]:
    """A forward proxy that records what it is asked (an absolute URI in the request line)."""
    state, httpd = start_server()
    yield state
    httpd.shutdown()


def dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]   # closed again: nothing listens there


def use_proxy(monkeypatch, url: str) -> None:
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    for variable in PROXY_VARIABLES:
        monkeypatch.setenv(variable, url)


def test_a_dead_proxy_in_the_environment_does_not_break_reads_through_the_port_forward(monkeypatch, envoy_admin):
    use_proxy(monkeypatch, f"http://127.0.0.1:{dead_port()}")
    assert HttpEndpoint(envoy_admin.url).get_json("/server_info") == {"state": "LIVE"}
    assert [r.path for r in envoy_admin.requests] == ["/server_info"]


def test_loopback_requests_never_reach_a_live_proxy(monkeypatch, envoy_admin, proxy):
    use_proxy(monkeypatch, proxy.url)
    for url in (envoy_admin.url, envoy_admin.url.replace("127.0.0.1", "localhost")):
        HttpEndpoint(url).get_text("/server_info")
    assert proxy.requests == []
    assert len(envoy_admin.requests) == 2


def test_other_hosts_keep_following_the_proxy_settings(monkeypatch, proxy):
    """istiod's Service name is not loopback: the proxy (or NO_PROXY, docs/deployment.md) decides."""
    istiod = "http://istiod.istio-system.svc:15014"
    proxy.answer(f"{istiod}/debug/syncz", [])
    use_proxy(monkeypatch, proxy.url)
    assert HttpEndpoint(istiod).get_json("/debug/syncz") == []
    assert [r.path for r in proxy.requests] == [f"{istiod}/debug/syncz"]


def test_no_proxy_still_exempts_other_hosts(monkeypatch, proxy):
    use_proxy(monkeypatch, proxy.url)
    monkeypatch.setenv("NO_PROXY", ".svc")
    with pytest.raises(TransientError, match="connection failed"):   # no cluster DNS here: sent directly
        HttpEndpoint("http://istiod.istio-system.svc:15014", timeout=2).get_text("/debug/syncz")
    assert proxy.requests == []


@pytest.mark.parametrize("url, loopback", [
    ("http://127.0.0.1:40123", True), ("http://127.8.9.1", True), ("http://[::1]:15000", True),
    ("http://localhost:15000", True), ("http://istiod.istio-system.svc:15014", False),
    ("http://10.0.0.7:15000", False), ("http://localhost.example.com", False),
])
def test_loopback_is_decided_from_the_url_host(url, loopback):
    assert is_loopback(url) is loopback
