"""KubeClient reads like a controller against an emulator that pages, watches, compacts and throttles."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from commands.clients.kube import KubeClient, ResourceExpired
from commands.errors import TransientError
from tests.support.kube import FakeKube


def pod(name: str, namespace: str = "prod", **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"containers": [{"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]}]}}


def names(items: list[dict[str, Any]]) -> list[str]:
    return [item["metadata"]["name"] for item in items]


# -- paging ----------------------------------------------------------------------------------


def test_a_list_is_read_in_pages_of_limit_following_continue(kube: FakeKube, kube_client: KubeClient):
    kube.add(*(pod(f"p-{i:02d}") for i in range(7)))

    listing = kube_client.read_list("Pod", "prod", page_size=3)

    assert names(listing.items) == [f"p-{i:02d}" for i in range(7)]
    requests = kube.requests("GET", "/api/v1/namespaces/prod/pods")
    assert [r.params.get("limit") for r in requests] == ["3", "3", "3"]
    assert [bool(r.params.get("continue")) for r in requests] == [False, True, True]
    assert listing.pages == 3


def test_keep_trims_each_object_as_its_page_arrives_and_drops_none(kube: FakeKube, kube_client: KubeClient):
    kube.add(pod("a"), pod("b"), pod("c"))

    def keep(item: dict[str, Any]) -> dict[str, Any] | None:
        return None if item["metadata"]["name"] == "b" else {"metadata": item["metadata"]}

    items = kube_client.list("Pod", keep=keep)

    assert names(items) == ["a", "c"]
    assert all("spec" not in item for item in items)


def test_an_expired_continue_token_starts_the_list_again_without_mixing_the_two(kube: FakeKube,
                                                                                  kube_client: KubeClient):
    kube.add(*(pod(f"p-{i}") for i in range(4)))
    pages = itertools.count()

    def keep(item: dict[str, Any]) -> dict[str, Any]:
        # Compact the history while the client holds the first page's continue token.
        if next(pages) == 1:
            kube.compact()
            kube.remove("Pod", "prod", "p-0")
        return item

    listing = kube_client.read_list("Pod", page_size=2, keep=keep)

    assert names(listing.items) == ["p-1", "p-2", "p-3"]
    statuses = [r.params.get("continue") is None for r in kube.requests("GET", "/api/v1/pods")]
    assert statuses == [True, False, True, False]  # first list, its expired continue, the new list in two pages


def test_the_list_resource_version_is_where_a_watch_continues(kube: FakeKube, kube_client: KubeClient):
    kube.add(pod("a"))

    listing = kube_client.read_list("Pod")

    assert listing.resource_version == kube.object("Pod", "prod", "a")["metadata"]["resourceVersion"]


# -- 429 --------------------------------------------------------------------------------------


def test_a_429_is_waited_out_for_as_long_as_retry_after_says(kube: FakeKube, kube_client: KubeClient):
    kube.add(pod("a"))
    kube.throttle(2, kind="Pod", retry_after="1")

    started = time.monotonic()
    items = kube_client.list("Pod")

    assert names(items) == ["a"]
    assert time.monotonic() - started >= 2.0
    assert kube.count("GET", "/api/v1/pods") == 3


def test_a_server_that_keeps_throttling_is_a_transient_error_naming_429(kube: FakeKube, kube_client: KubeClient):
    kube_client.throttle_retries = 1
    kube.throttle(5, kind="Pod", retry_after="0")

    with pytest.raises(TransientError) as raised:
        kube_client.list("Pod")

    assert raised.value.status == 429
    assert "throttling" in str(raised.value)


# -- watch --------------------------------------------------------------------------------------


def test_a_watch_sends_the_changes_after_its_resource_version(kube: FakeKube, kube_client: KubeClient):
    kube.add(pod("a"))
    version = kube_client.read_list("Pod").resource_version
    kube.add(pod("b"))
    kube.remove("Pod", "prod", "a")

    events = [e for e in kube_client.watch("Pod", resource_version=version, timeout_seconds=1)
              if e.type != "BOOKMARK"]

    assert [(e.type, e.object["metadata"]["name"]) for e in events] == [("ADDED", "b"), ("DELETED", "a")]
    assert all(e.object["kind"] == "Pod" for e in events)


def test_an_idle_watch_gets_bookmarks_that_move_its_resource_version_on(kube: FakeKube, kube_client: KubeClient):
    kube.add(pod("a"))
    version = kube_client.read_list("Pod").resource_version
    kube.add({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "prod"}})

    events = list(kube_client.watch("Pod", resource_version=version, timeout_seconds=1))

    assert events and {e.type for e in events} == {"BOOKMARK"}
    assert int(events[-1].resource_version) > int(version)
    (request,) = kube.requests("GET", "/api/v1/pods")[-1:]
    assert request.params["allowWatchBookmarks"] == "true"


def test_a_watch_from_a_compacted_resource_version_is_410_gone(kube: FakeKube, kube_client: KubeClient):
    kube.add(pod("a"))
    version = kube_client.read_list("Pod").resource_version
    kube.add(pod("b"))
    kube.compact()

    with pytest.raises(ResourceExpired) as raised:
        list(kube_client.watch("Pod", resource_version=version, timeout_seconds=1))

    assert raised.value.status == 410


def test_a_namespace_watch_sees_only_its_namespace(kube: FakeKube, kube_client: KubeClient):
    version = kube_client.read_list("Pod").resource_version
    kube.add(pod("a", "prod"), pod("b", "staging"))

    events = [e for e in kube_client.watch("Pod", "prod", resource_version=version, timeout_seconds=1)
              if e.type != "BOOKMARK"]

    assert [e.object["metadata"]["name"] for e in events] == ["a"]


# -- a port-forward beside a list ------------------------------------------------------------------


def test_a_list_during_a_port_forward_handshake_is_still_a_plain_request(kube: FakeKube):
    """kubernetes.stream swaps call_api on the ApiClient it is handed while a websocket opens; a list in another
    diagnosis meanwhile must not go out as a websocket (it did when both shared one ApiClient)."""
    import threading

    from commands.clients.kube import KubePortForwarder
    from commands.errors import MeshbotError
    from commands.resources.references import PodRef

    kube.add(pod("a"))
    kube.slow("Pod", 3, verb="get", namespace="prod", subresource="portforward")
    kube_client = kube.client(timeout=5)  # one client for both, as one diagnosis's lists and tunnels share it
    failures: list[Exception] = []

    def forward() -> None:
        try:
            KubePortForwarder(kube_client).open_stream(PodRef("prod", "a"), 15000)
        except MeshbotError as exc:  # kmock answers no websocket: the tunnel fails, which is not the point
            failures.append(exc)

    opener = threading.Thread(target=forward)
    opener.start()
    deadline = time.monotonic() + 10
    while not [r for r in kube.requests("GET") if r.url.path.endswith("/portforward")]:
        assert time.monotonic() < deadline
        time.sleep(0.02)

    items = kube_client.list("Pod", "prod")
    opener.join(10)

    assert names(items) == ["a"]
    assert failures  # the handshake really was under way while the list ran
