"""The test API server picks each request's reaction without replaying its history (tests/support/kmock_matching.py),
and picks the one kmock's own membership test would pick."""

from __future__ import annotations

import contextlib

from kmock._internal import dsl

from commands.errors import MeshbotError
from tests.support.kmock_matching import sees
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
