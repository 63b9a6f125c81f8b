"""The demo's and the tests' API servers pick each request's reaction without replaying its history
(bot/demo/kmock_matching.py), and pick the one kmock's own membership test would pick."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from kmock._internal import dsl

from bot.demo.cluster import EmbeddedCluster
from bot.demo.kmock_matching import sees
from commands.clients.kube import KubeClient
from commands.errors import MeshbotError
from tests.support.kube import FakeKube


def test_constant_time_matching_agrees_with_kmock_for_every_reaction_and_request(kube: FakeKube, kube_client) -> None:
    # Reactions of every shape the fixtures install: kind/verb filters, namespace and name filters, a subresource.
    kube.fail("Pod", 403, namespace="prod")
    kube.fail("Deployment", 409, verb="patch", namespace="payments", name="api")
    kube.fail("Pod", 500, verb="get", subresource="log")
    kube.slow("Service", 0.01, namespace="shop")
    for namespace in ("prod", "shop", "payments", "default"):
        for kind in ("Pod", "Service", "Deployment"):
            with contextlib.suppress(MeshbotError):  # the refused ones are answered too, with their status
                kube_client.list(kind, namespace)
        with contextlib.suppress(MeshbotError):
            kube_client.get("Deployment", namespace, "api")
    requests = list(kube.loop.call(lambda: list(kube.emulator)))
    sources = kube.loop.call(lambda: [payload._source for payload in kube.emulator._payloads])

    answers = kube.loop.call(lambda: [(sees(source, request), request in source)
                                      for source in sources for request in requests])

    assert len(requests) >= 12 and any(isinstance(source, dsl.Filter) for source in sources)
    assert [fast for fast, _ in answers] == [slow for _, slow in answers]
    assert any(fast for fast, _ in answers) and not all(fast for fast, _ in answers)


def test_the_demo_api_server_answers_without_walking_the_requests_it_answered_before(monkeypatch) -> None:
    # kmock's own matching walks every recorded request for each of its 14 reactions: a demo left open slows down
    # with every request.  Count the walks (kmock's Root.__iter__, instrumented, not replaced) while the demo's
    # API server answers through the bot's own client.
    cluster = EmbeddedCluster().start()
    client = KubeClient.for_host(cluster.url, timeout=5)
    try:
        cluster.load([{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "payment-1", "namespace": "prod",
                                                                       "labels": {"app": "payment"}}}])
        walks: list[str] = []
        walk = dsl.Root.__iter__

        def counted_walk(view: dsl.Root) -> Iterator[Any]:
            walks.append(type(view).__name__)
            yield from walk(view)
        monkeypatch.setattr(dsl.Root, "__iter__", counted_walk)

        answers = [client.list("Pod", "prod", label_selector="app=payment") for _ in range(30)]
        with contextlib.suppress(MeshbotError):  # a miss is answered through the same reactions
            client.get("Pod", "prod", "missing")

        assert walks == []
        assert all([pod["metadata"]["name"] for pod in answer] == ["payment-1"] for answer in answers)
    finally:
        client.close()
        cluster.stop()
