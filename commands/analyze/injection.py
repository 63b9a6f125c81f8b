"""Sidecar injection analyzers: uninjected namespaces and pods, conflicting labels, stale proxy images."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from commands.analyze import analyzer, report
from commands.checks.registry import CheckContext
from commands.cluster.injection import DATAPLANE_MODE_LABEL, DEFAULT_REVISION, NamespaceInjection
from commands.cluster.pods import sidecar_spec
from commands.cluster.selectors import PodIndex
from commands.cluster.snapshot import Resource, Snapshot
from commands.codes import go_list
from commands.findings import Finding
from commands.shapes import mapping

INJECT_ANNOTATION = "sidecar.istio.io/inject"
PROXY_IMAGE_ANNOTATION = "sidecar.istio.io/proxyImage"
PROXY_IMAGE_TYPE_ANNOTATION = "sidecar.istio.io/proxyImageType"
INJECTOR_CONFIGMAP = "istio-sidecar-injector"
# Istio's inject.IgnoredNamespaces: the webhook never injects here.
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease", "local-path-storage"})
# Image variants the injector appends to the tag (``proxyv2:1.22.1-distroless``).
KNOWN_IMAGE_VARIANTS = frozenset({"distroless", "debug"})


def is_system_namespace(name: str, snapshot: Snapshot) -> bool:
    return name in SYSTEM_NAMESPACES or name in {snapshot.istio_namespace, "istio-system"}


def pod_opts_out(pod: Resource) -> bool:
    """``sidecar.istio.io/inject: "false"`` as a label (which wins) or an annotation."""
    value = pod.labels.get(INJECT_ANNOTATION, pod.annotations.get(INJECT_ANNOTATION))
    return str(value).lower() == "false"


def namespace_injection(snapshot: Snapshot) -> dict[str, NamespaceInjection]:
    """Injection labels of every Namespace object in the snapshot."""
    return {ns.name: NamespaceInjection.of_labels(ns.labels) for ns in snapshot.of_kind("Namespace")}


class InjectorConfigs:
    """The ``values`` of each revision's ``istio-sidecar-injector`` ConfigMap, parsed once."""

    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot
        self._values: dict[str, Mapping[str, Any] | None] = {}

    def values(self, revision: str | None) -> Mapping[str, Any] | None:
        name = configmap_name(revision)
        if name not in self._values:
            self._values[name] = self._load(name)
        return self._values[name]

    def _load(self, name: str) -> Mapping[str, Any] | None:
        configmap = self.snapshot.get("ConfigMap", self.snapshot.istio_namespace, name)
        text = mapping(configmap.body.get("data")).get("values") if configmap else None
        if not isinstance(text, str):
            return None
        try:
            values = json.loads(text)
        except ValueError:
            return None
        return values if isinstance(values, Mapping) else None

    def enables_namespaces_by_default(self, revision: str | None) -> bool:
        webhook = mapping(mapping(self.values(revision)).get("sidecarInjectorWebhook"))
        return webhook.get("enableNamespacesByDefault") is True

    def proxy_image(self, revision: str) -> str | None:
        """The image the injector puts in ``istio-proxy``; None when the config does not say."""
        global_values = mapping(mapping(self.values(revision)).get("global"))
        image = str(mapping(global_values.get("proxy")).get("image") or "")
        if "/" in image:
            return image
        hub, tag = global_values.get("hub"), global_values.get("tag")
        if not (image and hub and tag):
            return None  # a half-filled config would flag every pod
        return f"{hub}/{image}:{tag}"

    def image_variant(self, revision: str) -> str | None:
        variant = mapping(mapping(self.values(revision)).get("global")).get("variant")
        return str(variant) if variant else None


def configmap_name(revision: str | None) -> str:
    if not revision or revision == DEFAULT_REVISION:
        return INJECTOR_CONFIGMAP
    return f"{INJECTOR_CONFIGMAP}-{revision}"


@analyzer("injection.Analyzer", inputs=("Namespace", "Pod", "ConfigMap"))
def injection(ctx: CheckContext) -> list[Finding]:
    """IST0102/IST0123 per namespace, IST0103 for uninjected pods in injected namespaces."""
    snapshot = ctx.snapshot
    injectors = InjectorConfigs(snapshot)
    findings: list[Finding] = []
    injected: list[str] = []
    for namespace in snapshot.of_kind("Namespace"):
        if is_system_namespace(namespace.name, snapshot):
            continue
        labels = NamespaceInjection.of_labels(namespace.labels)
        conflicting = labels.conflicting_labels()
        if conflicting:
            findings.append(report("IST0123", namespace, labels=go_list(conflicting)))
        if labels.ambient:
            continue
        if labels.unlabelled:
            # With enableNamespacesByDefault istioctl reports IST0148 instead and checks no pods.
            if not injectors.enables_namespaces_by_default(DEFAULT_REVISION):
                findings.append(report("IST0102", namespace, namespace=namespace.name))
            continue
        if labels.injector_revision is not None:
            injected.append(namespace.name)
    pods = PodIndex.of(snapshot)
    for name in injected:
        findings.extend(report("IST0103", pod, pod=pod.qualified_name)
                        for pod in pods.in_namespace(name) if _should_have_proxy(pod))
    return findings


def _should_have_proxy(pod: Resource) -> bool:
    if sidecar_spec(pod) is not None or pod_opts_out(pod) or pod.spec.get("hostNetwork"):
        return False
    # A pod opted into ambient is not given a sidecar (istioctl does not check this).
    return pod.labels.get(DATAPLANE_MODE_LABEL) != "ambient"


@analyzer("injection.ImageAnalyzer", inputs=("Namespace", "Pod", "ConfigMap"))
def proxy_images(ctx: CheckContext) -> list[Finding]:
    """IST0158 for each injected namespace whose pods run another proxy image than the injector's."""
    snapshot = ctx.snapshot
    injectors = InjectorConfigs(snapshot)
    pods = PodIndex.of(snapshot)
    findings: list[Finding] = []
    for namespace in snapshot.of_kind("Namespace"):
        revision = NamespaceInjection.of_labels(namespace.labels).injector_revision
        expected = injectors.proxy_image(revision) if revision else None
        if revision is None or expected is None:
            continue  # no injector config for this revision: nothing to compare with
        variants = _variants(snapshot, injectors.image_variant(revision))
        stale = sorted(pod.name for pod in _mismatched(pods.in_namespace(namespace.name), expected, variants))
        if stale:
            findings.append(report("IST0158", namespace, pods=go_list(stale)))
    return findings


def _variants(snapshot: Snapshot, configured: str | None) -> set[str]:
    image = mapping(mapping(snapshot.mesh_config.get("defaultConfig")).get("image"))
    found = set(KNOWN_IMAGE_VARIANTS)
    found.update(str(v) for v in (configured, image.get("imageType")) if v)
    return found


def _mismatched(pods: list[Resource], expected: str, variants: set[str]) -> Iterator[Resource]:
    for pod in pods:
        if pod.annotations.get(PROXY_IMAGE_ANNOTATION):
            continue  # a per-pod image overrides the injector on purpose
        proxy = sidecar_spec(pod)
        if proxy is None or not proxy.get("image"):
            continue
        image_type = pod.annotations.get(PROXY_IMAGE_TYPE_ANNOTATION)
        if not _same_image(str(proxy["image"]), expected, variants | ({str(image_type)} if image_type else set())):
            yield pod


def _same_image(image: str, expected: str, variants: set[str]) -> bool:
    image = image.split("@", 1)[0]  # a pinned digest is still the same tag
    return image == expected or any(image == f"{expected}-{variant}" for variant in variants)
