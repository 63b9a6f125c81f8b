"""Reaching istiod the way it allows: a fake istiod that refuses what the real one refuses
(tests/support/istiod.py, after pilot/pkg/xds/debug.go), and meshbot going through a port-forward
(where requests arrive as loopback) unless told to go direct with a token."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import httpx
import pytest
import yaml

from commands.catalog import default_checks
from commands.checks.registry import CheckContext
from commands.clients.http import HttpEndpoint, http_endpoint
from commands.clients.kube import KubePortForwarder, LocalBridge
from commands.cluster.endpoints import (
    ISTIOD_REFUSED_METRICS,
    ISTIOD_REFUSED_NAMESPACE,
    ISTIOD_REFUSED_UNAUTHENTICATED,
    EndpointResolver,
)
from commands.errors import AccessDenied
from commands.report import report_order
from commands.resources.references import PodRef
from tests.support.analysis import snapshot_from_yaml
from tests.support.istiod import POD_NETWORK_SOURCE, FakeIstiod, istiod_pod_yaml, syncz_entry
from tests.support.kube import FakeKube

CHECKS = default_checks()
MESHBOT_IDENTITY = "spiffe://cluster.local/ns/meshbot/sa/meshbot"
ISTIO_SYSTEM_IDENTITY = "spiffe://cluster.local/ns/istio-system/sa/istio-reader"
TOKEN = "projected-token-audience-istio-ca"

ISTIOD_POD = istiod_pod_yaml(pod_ip="127.0.0.1")


def from_another_pod() -> httpx.Client:
    """An HTTP client whose connections come from a non-loopback source, as from another pod."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=POD_NETWORK_SOURCE))


def get(url: str, *, client: httpx.Client | None = None, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return (client or httpx.Client()).get(url, headers=headers, timeout=2)


@pytest.fixture
def istiod(istiod_server: FakeIstiod) -> FakeIstiod:
    istiod_server.answer("/debug/syncz", [syncz_entry("payment-1.prod")])
    istiod_server.answer("/debug/config_dump", {"configs": []})
    istiod_server.answer("/version", "1.22.3-abc-Clean")
    istiod_server.answer("/metrics", "pilot_xds_pushes 1\n")
    return istiod_server


def of_code(findings, code: str) -> list:
    return [f for f in findings if f.code == code]


def proxy_status(resolver: EndpointResolver):
    ctx = CheckContext(snapshot=snapshot_from_yaml(ISTIOD_POD), endpoints=resolver)
    return report_order(CHECKS.run("proxy-status", ctx))


# -- the fake refuses what istiod refuses ------------------------------------------------------------------


def test_fake_istiod_serves_debug_to_a_loopback_caller(istiod):
    answer = get(f"{istiod.url}/debug/syncz")
    assert answer.status_code == 200 and answer.json()[0]["proxy"] == "payment-1.prod"


def test_fake_istiod_refuses_debug_from_another_pod_with_401_and_an_empty_body(istiod):
    answer = get(f"{istiod.url}/debug/syncz", client=from_another_pod())
    assert (answer.status_code, answer.content) == (401, b"")
    assert istiod.requests[-1].client_ip == POD_NETWORK_SOURCE


def test_fake_istiod_serves_version_and_metrics_to_another_pod(istiod):
    pod = from_another_pod()
    assert get(f"{istiod.url}/version", client=pod).status_code == 200
    assert get(f"{istiod.url}/metrics", client=pod).status_code == 200


def test_fake_istiod_refuses_a_token_it_cannot_verify(istiod):
    istiod.accept_token(TOKEN, ISTIO_SYSTEM_IDENTITY)
    assert get(f"{istiod.url}/debug/syncz", client=from_another_pod(), token="forged").status_code == 401


def test_fake_istiod_serves_an_authenticated_istio_system_caller(istiod):
    istiod.accept_token(TOKEN, ISTIO_SYSTEM_IDENTITY)
    assert get(f"{istiod.url}/debug/syncz", client=from_another_pod(), token=TOKEN).status_code == 200


def test_fake_istiod_limits_other_namespaces_to_the_namespace_debuggers_under_debug_endpoint_auth(istiod):
    istiod.accept_token(TOKEN, MESHBOT_IDENTITY)
    pod = from_another_pod()
    refused = get(f"{istiod.url}/debug/syncz", client=pod, token=TOKEN)
    assert (refused.status_code, refused.content) == (403, b"")
    assert get(f"{istiod.url}/debug/config_dump", client=pod, token=TOKEN).status_code == 200


@pytest.mark.parametrize("setup", ["allowed namespace", "auth off"])
def test_fake_istiod_serves_other_namespaces_when_allowed_or_namespace_auth_is_off(istiod, setup):
    istiod.accept_token(TOKEN, MESHBOT_IDENTITY)
    if setup == "allowed namespace":
        istiod.allowed_namespaces = frozenset({"meshbot"})
    else:
        istiod.debug_endpoint_auth = False
    assert get(f"{istiod.url}/debug/syncz", client=from_another_pod(), token=TOKEN).status_code == 200


def test_fake_istiod_refuses_metrics_to_another_pod_with_metrics_localhost_access_only(istiod):
    istiod.metrics_localhost_only = True
    answer = get(f"{istiod.url}/metrics", client=from_another_pod())
    assert (answer.status_code, answer.text) == (403, "Only requests from localhost are allowed\n")
    assert get(f"{istiod.url}/metrics").status_code == 200


# -- meshbot goes through a port-forward --------------------------------------------------------------------


class BridgeToFakeIstiod:
    """A PortForwarder whose tunnel is a TCP connection from 127.0.0.1 to the fake istiod: like the
    kubelet's, which dials the port inside the pod's network namespace, so istiod sees a loopback caller."""

    def __init__(self, istiod: FakeIstiod):
        self.istiod = istiod
        self.forwarded: list[tuple[PodRef, int]] = []

    @contextlib.contextmanager
    def forward(self, pod: PodRef, port: int) -> Iterator[str]:
        self.forwarded.append((pod, port))
        target = (self.istiod.host, self.istiod.port)
        with LocalBridge(lambda: socket.create_connection(target, source_address=("127.0.0.1", 0))) as bridge:
            yield bridge.url


def test_in_cluster_istiod_is_read_through_a_port_forward_and_served_as_loopback(istiod):
    forwarder = BridgeToFakeIstiod(istiod)
    resolver = EndpointResolver(http=http_endpoint, port_forwarder=forwarder, direct_pod_ips=True)

    findings = proxy_status(resolver)

    assert forwarder.forwarded == [(PodRef("istio-system", "istiod-1"), 15014)]
    assert of_code(findings, "MB2000") and not of_code(findings, "MB2005")
    assert {(r.path, r.client_ip, r.status) for r in istiod.requests} == {
        ("/debug/syncz", "127.0.0.1", 200), ("/version", "127.0.0.1", 200), ("/metrics", "127.0.0.1", 200)}


def test_certificate_metrics_are_read_through_the_same_port_forward(istiod):
    forwarder = BridgeToFakeIstiod(istiod)
    resolver = EndpointResolver(http=http_endpoint, port_forwarder=forwarder, direct_pod_ips=True)
    (pod,) = resolver.istiod_targets(snapshot_from_yaml(ISTIOD_POD))
    with resolver.open_istiod(pod) as endpoint:
        assert endpoint.get_text("/metrics") == "pilot_xds_pushes 1\n"
    assert forwarder.forwarded == [(PodRef("istio-system", "istiod-1"), 15014)]


def direct_resolver(istiod: FakeIstiod, **http_options) -> EndpointResolver:
    """In-cluster with MESHBOT_ISTIOD_DIRECT: the pod IP (127.0.0.1 here) from a pod-network source."""
    return EndpointResolver(
        http=http_endpoint, direct_pod_ips=True, istiod_direct=True, istiod_port=istiod.port,
        istiod_http=lambda url: HttpEndpoint(url, client=from_another_pod(), timeout=2, **http_options))


def test_going_direct_without_credentials_is_a_finding_naming_the_401_and_the_port_forward(istiod):
    (unreachable,) = of_code(proxy_status(direct_resolver(istiod)), "MB2005")
    assert ISTIOD_REFUSED_UNAUTHENTICATED in unreachable.message
    assert "HTTP 401" in unreachable.message and "pods/portforward in istio-system" in unreachable.message


def test_going_direct_with_a_token_from_an_allowed_namespace_is_served(istiod, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    istiod.accept_token(TOKEN, MESHBOT_IDENTITY)
    istiod.allowed_namespaces = frozenset({"meshbot"})

    findings = proxy_status(direct_resolver(istiod, bearer_token_file=str(token_file)))

    assert of_code(findings, "MB2000") and not of_code(findings, "MB2005")
    syncz = next(r for r in istiod.requests if r.path == "/debug/syncz")
    assert syncz.headers["Authorization"] == f"Bearer {TOKEN}" and syncz.client_ip == POD_NETWORK_SOURCE


def test_going_direct_with_a_token_from_meshbots_namespace_names_debug_endpoint_auth(istiod, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    istiod.accept_token(TOKEN, MESHBOT_IDENTITY)

    (unreachable,) = of_code(proxy_status(direct_resolver(istiod, bearer_token_file=str(token_file))), "MB2005")

    assert ISTIOD_REFUSED_NAMESPACE in unreachable.message and "HTTP 403" in unreachable.message
    assert TOKEN not in unreachable.message and TOKEN not in str(unreachable.evidence)


def test_a_direct_url_refused_metrics_says_metrics_are_loopback_only(istiod):
    istiod.metrics_localhost_only = True
    resolver = EndpointResolver(http=lambda url: HttpEndpoint(url, client=from_another_pod(), timeout=2),
                                istiod_urls=[istiod.url])
    with resolver.open_istiod(istiod.url) as endpoint, pytest.raises(AccessDenied) as refused:
        endpoint.get_text("/metrics")
    assert ISTIOD_REFUSED_METRICS in str(refused.value)


def test_a_loopback_url_such_as_a_users_own_port_forward_is_served(istiod):
    findings = proxy_status(EndpointResolver(http=http_endpoint, istiod_urls=[istiod.url]))
    assert of_code(findings, "MB2000") and not of_code(findings, "MB2005")


# -- the real port-forwarder's request and the API server's refusals (kmock has no websockets) ------------


def through_the_api_server(kube: FakeKube, timeout: float | None = None) -> EndpointResolver:
    kube.add(yaml.safe_load(ISTIOD_POD))
    client = kube.client() if timeout is None else kube.client(timeout=timeout)
    return EndpointResolver(http=http_endpoint, port_forwarder=KubePortForwarder(client), direct_pod_ips=True)


def test_istiod_port_forward_asks_the_api_server_for_port_15014_of_the_istiod_pod(kube):
    findings = proxy_status(through_the_api_server(kube))

    (request,) = kube.requests("GET", "/api/v1/namespaces/istio-system/pods/istiod-1/portforward")
    assert request.params == {"ports": "15014"} and request.headers["Upgrade"].lower() == "websocket"
    (unreachable,) = of_code(findings, "MB2005")
    assert "did not open a websocket" in unreachable.message
    assert unreachable.evidence["endpoint"] == "/api/v1/namespaces/istio-system/pods/istiod-1/portforward"


def test_istiod_port_forward_forbidden_is_a_finding_naming_the_rbac_permission(kube):
    kube.fail("Pod", 403, verb="get", namespace="istio-system", subresource="portforward")

    (unreachable,) = of_code(proxy_status(through_the_api_server(kube)), "MB2005")

    assert ("cannot create pods/portforward istio-system/istiod-1: forbidden "
            "(needs RBAC create on pods/portforward)") in unreachable.message


def test_istiod_port_forward_unauthorized_is_a_finding_about_credentials(kube):
    kube.fail("Pod", 401, verb="get", namespace="istio-system", subresource="portforward")
    (unreachable,) = of_code(proxy_status(through_the_api_server(kube)), "MB2005")
    assert "pods/portforward istio-system/istiod-1: unauthorized" in unreachable.message


def test_istiod_port_forward_that_never_answers_is_a_timeout_finding(kube):
    kube.slow("Pod", 3, verb="get", namespace="istio-system")
    (unreachable,) = of_code(proxy_status(through_the_api_server(kube, timeout=1.0)), "MB2005")
    assert "pods/portforward istio-system/istiod-1: no answer within 1s" in unreachable.message
