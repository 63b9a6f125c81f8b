"""KubeClient and KubePortForwarder against kmock's emulated API server (and real sockets)."""

from __future__ import annotations

import http.server
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import yaml

from commands.clients.kube import KubeClient, KubePortForwarder, LocalBridge, PatchStrategy
from commands.errors import AccessDenied, ClusterError, Conflict, MeshbotError, NotFound, TransientError, UserError
from commands.resources.references import PodRef
from tests.support.kube import FakeKube

TOKEN = "sekrit-token-0123456789"


def pod(name: str = "payment-1", namespace: str = "prod", **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}}


def deployment(name: str = "payment", namespace: str = "prod") -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": 2}}


def as_stored(obj: dict[str, Any], resource_version: str) -> dict[str, Any]:
    """``obj`` as the API server answers it: with the resourceVersion every stored object has."""
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": resource_version}}


# -- reads ------------------------------------------------------------------------------


def test_list_returns_plain_dicts_with_kind_and_api_version(kube: FakeKube, kube_client: KubeClient):
    kube.add({"metadata": {"name": "payment-1", "namespace": "prod"}, "kind": "Pod"})

    items = kube_client.list("Pod")

    assert items == [{"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": "payment-1", "namespace": "prod", "resourceVersion": "1"}}]
    assert all(type(item) is dict for item in items)


def test_list_is_cluster_wide_unless_a_namespace_is_given(kube: FakeKube, kube_client: KubeClient):
    kube.add(pod("a", "prod"), pod("b", "staging"))

    everywhere = kube_client.list("Pod")
    in_prod = kube_client.list("Pod", "prod")

    assert sorted(p["metadata"]["name"] for p in everywhere) == ["a", "b"]
    assert [p["metadata"]["name"] for p in in_prod] == ["a"]
    assert kube.count("GET", "/api/v1/pods") == 1
    assert kube.count("GET", "/api/v1/namespaces/prod/pods") == 1


def test_list_sends_field_and_label_selectors(kube: FakeKube, kube_client: KubeClient):
    kube.add(pod("a", app="shop"), pod("b", app="cart"))

    items = kube_client.list("Pod", field_selector="metadata.namespace=prod", label_selector="app=shop")

    assert [p["metadata"]["name"] for p in items] == ["a"]
    (request,) = kube.requests("GET", "/api/v1/pods")
    assert request.params == {"fieldSelector": "metadata.namespace=prod", "labelSelector": "app=shop", "limit": "500"}


def test_list_of_custom_resources_uses_their_group_path(kube: FakeKube, kube_client: KubeClient):
    vs = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
          "metadata": {"name": "shop", "namespace": "prod"}, "spec": {"hosts": ["shop"]}}
    kube.add(vs)

    assert kube_client.list("VirtualService") == [as_stored(vs, "1")]
    assert kube.count("GET", "/apis/networking.istio.io/v1/virtualservices") == 1


def test_list_of_namespaces_works_around_the_kmock_path_bug(kube: FakeKube, kube_client: KubeClient):
    kube.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}})

    assert [n["metadata"]["name"] for n in kube_client.list("Namespace")] == ["prod"]
    assert kube_client.get("Namespace", None, "prod")["metadata"]["name"] == "prod"


def test_get_returns_the_object(kube: FakeKube, kube_client: KubeClient):
    kube.add(pod())

    assert kube_client.get("Pod", "prod", "payment-1") == as_stored(pod(), "1")


def test_get_of_a_missing_object_raises_not_found(kube: FakeKube, kube_client: KubeClient):
    with pytest.raises(NotFound, match="cannot get pods prod/ghost: not found"):
        kube_client.get("Pod", "prod", "ghost")


def test_list_of_a_resource_the_cluster_does_not_serve_raises_not_found(kube: FakeKube, kube_client: KubeClient):
    kube.not_served("EnvoyFilter")

    with pytest.raises(NotFound, match="envoyfilters.networking.istio.io.*does not serve"):
        kube_client.list("EnvoyFilter")


def test_forbidden_list_names_the_verb_resource_and_scope(kube: FakeKube, kube_client: KubeClient):
    kube.fail("Pod", 403)

    with pytest.raises(AccessDenied) as caught:
        kube_client.list("Pod")

    assert str(caught.value) == "cannot list pods cluster-wide: forbidden (needs RBAC list on pods)"
    assert caught.value.status == 403


def test_forbidden_namespaced_list_names_the_namespace(kube: FakeKube, kube_client: KubeClient):
    kube.fail("ConfigMap", 403, namespace="istio-system")

    with pytest.raises(AccessDenied, match="cannot list configmaps in namespace istio-system: forbidden"):
        kube_client.list("ConfigMap", "istio-system")


def test_unauthorized_is_access_denied(kube: FakeKube, kube_client: KubeClient):
    kube.fail("Service", 401)

    with pytest.raises(AccessDenied, match="unauthorized"):
        kube_client.list("Service")


def test_server_error_is_transient(kube: FakeKube, kube_client: KubeClient):
    kube.fail("Service", 503)

    with pytest.raises(TransientError, match="cannot list services cluster-wide: the API server answered HTTP 503"):
        kube_client.list("Service")


def test_slow_answer_times_out_within_about_the_timeout(kube: FakeKube):
    kube.slow("Service", 5)
    client = kube.client(timeout=0.5)

    started = time.monotonic()
    with pytest.raises(TransientError, match="no answer within 0.5s"):
        client.list("Service")

    assert time.monotonic() - started < 1.5


def test_refused_connection_is_transient():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    client = KubeClient.for_host(f"http://127.0.0.1:{port}", timeout=1)

    with pytest.raises(TransientError, match="cannot list pods cluster-wide: connection refused"):
        client.list("Pod")


@pytest.mark.parametrize("name", ["../secrets", "a/b", "UPPER", ""])
def test_names_that_could_change_the_url_are_rejected_before_any_request(kube: FakeKube, kube_client: KubeClient,
                                                                       name: str):
    with pytest.raises(UserError):
        kube_client.get("Secret", "istio-system", name)

    assert kube.requests() == []


def test_unknown_kind_is_a_user_error(kube_client: KubeClient):
    with pytest.raises(UserError, match="unknown kind 'Banana'"):
        kube_client.list("Banana")


# -- tokens ------------------------------------------------------------------------------


def test_token_is_sent_as_bearer(kube: FakeKube):
    kube.client(token=TOKEN).list("Pod")

    (request,) = kube.requests("GET", "/api/v1/pods")
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize("arrange", [
    lambda kube: kube.fail("Pod", 401, message=f"token {TOKEN} rejected"),
    lambda kube: kube.fail("Pod", 403),
    lambda kube: kube.fail("Pod", 500, message=f"echo {TOKEN}"),
    lambda kube: kube.fail("Pod", 422, message="invalid"),
    lambda kube: kube.slow("Pod", 5),
], ids=["401", "403", "500", "422", "timeout"])
def test_token_never_appears_in_errors_or_logs(kube: FakeKube, caplog: pytest.LogCaptureFixture,
                                               arrange: Callable[[FakeKube], None]):
    arrange(kube)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(MeshbotError) as caught:
        kube.client(token=TOKEN, timeout=0.3).list("Pod")

    assert TOKEN not in str(caught.value)
    assert TOKEN not in repr(caught.value.__dict__)
    assert TOKEN not in caplog.text


# -- construction ------------------------------------------------------------------------


def write_kubeconfig(path: Any, server: str, token: str, context: str = "test") -> str:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "other",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": "c", "user": "u"}},
                     {"name": "other", "context": {"cluster": "c", "user": "nobody"}}],
    }))
    return str(path)


def test_explicit_kubeconfig_and_context_win_over_in_cluster_detection(kube: FakeKube, tmp_path):
    kubeconfig = write_kubeconfig(tmp_path / "config", kube.url, TOKEN)

    client = KubeClient.connect(kubeconfig, "test", timeout=1, environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    client.list("Pod")

    (request,) = kube.requests("GET", "/api/v1/pods")
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert client.timeout == 1


def test_unreadable_kubeconfig_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot load kubeconfig"):
        KubeClient.connect(tmp_path / "missing", environ={})


def test_unknown_context_is_a_user_error(kube: FakeKube, tmp_path):
    kubeconfig = write_kubeconfig(tmp_path / "config", kube.url, TOKEN)

    with pytest.raises(UserError, match="cannot load kubeconfig"):
        KubeClient.connect(kubeconfig, "nope", environ={})


# -- writes ------------------------------------------------------------------------------


def test_create_posts_the_object_to_its_namespace(kube: FakeKube, kube_client: KubeClient):
    created = kube_client.create("Deployment", deployment())

    assert created["metadata"]["name"] == "payment"
    assert kube.count("POST", "/apis/apps/v1/namespaces/prod/deployments") == 1
    assert kube.object("Deployment", "prod", "payment")["spec"] == {"replicas": 2}


def test_merge_patch_changes_the_object(kube: FakeKube, kube_client: KubeClient):
    kube.add(deployment())

    kube_client.patch("Deployment", "prod", "payment", {"spec": {"replicas": 3}})

    (request,) = kube.requests("PATCH", "/apis/apps/v1/namespaces/prod/deployments/payment")
    assert request.headers["Content-Type"] == "application/merge-patch+json"
    assert request.data == {"spec": {"replicas": 3}}
    assert kube.object("Deployment", "prod", "payment")["spec"] == {"replicas": 3}


def test_strategic_patch_sends_its_content_type(kube: FakeKube, kube_client: KubeClient):
    kube.add(deployment())

    kube_client.patch("Deployment", "prod", "payment", {"spec": {"replicas": 1}}, strategy=PatchStrategy.STRATEGIC)

    (request,) = kube.requests("PATCH")
    assert request.headers["Content-Type"] == "application/strategic-merge-patch+json"


def test_delete_removes_the_object(kube: FakeKube, kube_client: KubeClient):
    kube.add(pod())

    kube_client.delete("Pod", "prod", "payment-1")

    assert kube.count("DELETE", "/api/v1/namespaces/prod/pods/payment-1") == 1
    assert kube.object("Pod", "prod", "payment-1") is None


WRITES: dict[str, Callable[..., Any]] = {
    "create": lambda client, **kw: client.create("Deployment", deployment(), **kw),
    "patch": lambda client, **kw: client.patch("Deployment", "prod", "payment", {"spec": {"replicas": 3}}, **kw),
    "delete": lambda client, **kw: client.delete("Deployment", "prod", "payment", **kw),
}


@pytest.mark.parametrize("verb", WRITES)
def test_dry_run_sends_dry_run_all(kube: FakeKube, kube_client: KubeClient, verb: str):
    kube.add(deployment("other"))  # kmock does not emulate dry runs; only the request shape is checked
    if verb != "create":
        kube.add(deployment())

    WRITES[verb](kube_client, dry_run=True)

    (request,) = [r for r in kube.requests() if r.method.value != "GET"]
    assert request.params == {"dryRun": "All"}


@pytest.mark.parametrize("verb", WRITES)
def test_real_writes_send_no_dry_run(kube: FakeKube, kube_client: KubeClient, verb: str):
    if verb != "create":
        kube.add(deployment())

    WRITES[verb](kube_client)

    (request,) = kube.requests()
    assert "dryRun" not in request.params


@pytest.mark.parametrize("status, error_type", [
    (403, AccessDenied), (404, NotFound), (409, Conflict), (422, ClusterError), (500, TransientError),
])
@pytest.mark.parametrize("verb", WRITES)
def test_write_errors_map_to_meshbot_errors(kube: FakeKube, kube_client: KubeClient, verb: str, status: int,
                                            error_type: type[MeshbotError]):
    if verb != "create":  # kmock answers 409 itself, before any reaction, when creating an existing object
        kube.add(deployment())
    kube.fail("Deployment", status, verb=verb, message="the field is immutable")

    with pytest.raises(error_type) as caught:
        WRITES[verb](kube_client, dry_run=True)

    assert str(caught.value).startswith(f"cannot {verb} deployments.apps prod/payment: ")


def test_forbidden_write_names_the_missing_permission(kube: FakeKube, kube_client: KubeClient):
    kube.add(deployment())
    kube.fail("Deployment", 403, verb="patch")

    with pytest.raises(AccessDenied, match=r"needs RBAC patch on deployments\.apps"):
        WRITES["patch"](kube_client)


def test_conflict_keeps_the_server_explanation(kube: FakeKube, kube_client: KubeClient):
    kube.add(deployment())

    with pytest.raises(Conflict, match="conflict.*already exists"):
        kube_client.create("Deployment", deployment())


@pytest.mark.parametrize("verb", WRITES)
def test_slow_writes_time_out(kube: FakeKube, verb: str):
    if verb != "create":
        kube.add(deployment())
    kube.slow("Deployment", 5, verb=verb)
    client = kube.client(timeout=0.3)

    with pytest.raises(TransientError, match="no answer within 0.3s"):
        WRITES[verb](client)


# -- port-forward: the local bridge --------------------------------------------------------


class _Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = f"hello from {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[str, int]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[:2]
    server.shutdown()
    server.server_close()


def test_bridge_carries_http_to_the_far_end(http_server: tuple[str, int]):
    opened: list[socket.socket] = []

    def connect() -> socket.socket:
        opened.append(socket.create_connection(http_server))
        return opened[-1]

    with LocalBridge(connect) as bridge, httpx.Client(base_url=bridge.url, timeout=2) as http:
        first = http.get("/stats")
        second = http.get("/certs")

    assert bridge.url.startswith("http://127.0.0.1:")
    assert (first.status_code, first.text, second.text) == (200, "hello from /stats", "hello from /certs")
    assert len(opened) == 1  # keep-alive: one tunnel for both requests


def test_bridge_opens_a_tunnel_per_local_connection(http_server: tuple[str, int]):
    opened = []

    def connect() -> socket.socket:
        opened.append(socket.create_connection(http_server))
        return opened[-1]

    with LocalBridge(connect) as bridge:
        answers = [httpx.get(f"{bridge.url}/{n}", timeout=2).text for n in range(3)]

    assert answers == ["hello from /0", "hello from /1", "hello from /2"]
    assert len(opened) == 3


def test_bridge_works_over_a_socket_pair_like_the_port_forward_stream():
    ours, theirs = socket.socketpair()  # kubernetes' PortForward hands out one end of a socketpair

    def far_end() -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += theirs.recv(4096)
        theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        theirs.close()

    threading.Thread(target=far_end, daemon=True).start()
    with LocalBridge(lambda: ours) as bridge:
        answer = httpx.get(f"{bridge.url}/ready", timeout=2)

    assert (answer.status_code, answer.text) == (200, "ok")


def test_bridge_closes_its_listener_and_tunnels_on_exit(http_server: tuple[str, int]):
    opened = []

    def connect() -> socket.socket:
        opened.append(socket.create_connection(http_server))
        return opened[-1]

    with LocalBridge(connect) as bridge:
        httpx.get(bridge.url, timeout=2)
        port = bridge.port

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    assert all(s.fileno() == -1 for s in opened)


def test_bridge_drops_a_local_connection_when_the_tunnel_cannot_open():
    def connect() -> socket.socket:
        raise TransientError("cannot create pods/portforward prod/x: connection refused")

    with LocalBridge(connect) as bridge, pytest.raises(httpx.TransportError):
        httpx.get(bridge.url, timeout=2)


# -- port-forward: the request to the API server ------------------------------------------


def test_port_forward_asks_for_the_pods_portforward_websocket(kube: FakeKube, kube_client: KubeClient):
    kube.add(pod())
    forwarder = KubePortForwarder(kube_client)

    # kmock cannot speak websockets: it answers 200, so the tunnel fails after the request.
    with pytest.raises(TransientError, match="did not open a websocket"):
        with forwarder.forward(PodRef("prod", "payment-1"), 15000):
            pass

    (request,) = kube.requests("GET", "/api/v1/namespaces/prod/pods/payment-1/portforward")
    assert request.params == {"ports": "15000"}
    assert request.headers["Upgrade"].lower() == "websocket"


def test_port_forward_forbidden_names_the_permission(kube: FakeKube, kube_client: KubeClient):
    kube.add(pod())
    kube.fail("Pod", 403, verb="get", subresource="portforward")

    with pytest.raises(AccessDenied) as caught:
        with KubePortForwarder(kube_client).forward(PodRef("prod", "payment-1"), 15000):
            pass

    assert str(caught.value) == ("cannot create pods/portforward prod/payment-1: forbidden "
                                 "(needs RBAC create on pods/portforward)")


def test_port_forward_to_a_missing_pod_is_not_found(kube: FakeKube, kube_client: KubeClient):
    with pytest.raises(NotFound, match="pods/portforward prod/ghost: not found"):
        with KubePortForwarder(kube_client).forward(PodRef("prod", "ghost"), 15000):
            pass
