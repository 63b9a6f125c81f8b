"""The namespace injection rule the analyzers and the action planner share (commands.cluster.injection)."""

from __future__ import annotations

import pytest

from commands.cluster.injection import NamespaceInjection


@pytest.mark.parametrize("labels, revision", [
    ({"istio-injection": "enabled"}, "default"),
    ({"istio.io/rev": "canary"}, "canary"),
    ({"istio.io/rev": ""}, "default"),
    # istio-injection has priority: the default webhook matches enabled, the revision webhooks need it absent.
    ({"istio-injection": "enabled", "istio.io/rev": "canary"}, "default"),
    ({"istio-injection": "disabled", "istio.io/rev": "canary"}, None),
    ({"istio-injection": "", "istio.io/rev": "canary"}, None),
    ({"istio-injection": "disabled"}, None),
    ({}, None),
    ({"istio.io/dataplane-mode": "ambient"}, None),
])
def test_the_injecting_revision_follows_istios_webhook_selectors(labels: dict[str, str], revision: str | None):
    assert NamespaceInjection.of_labels(labels).injector_revision == revision


def test_an_ambient_namespace_is_enrolled_without_a_sidecar():
    ambient = NamespaceInjection.of_labels({"istio.io/dataplane-mode": "ambient"})
    assert ambient.enrolled and not ambient.injected


def test_a_namespace_with_disabled_injection_and_a_revision_is_not_enrolled():
    assert not NamespaceInjection.of_labels({"istio-injection": "disabled", "istio.io/rev": "canary"}).enrolled
