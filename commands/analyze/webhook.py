"""The injection webhooks as the API server applies them: overlaps and missing Services (IST0139), and
``image: auto`` workloads no Istio webhook will inject (IST0146/IST0147).

Both fail new pods: two webhooks injecting one pod add the sidecar twice, a webhook whose Service is
gone fails closed (Istio's chart sets failurePolicy Fail), and an ``istio-proxy`` container left
with ``image: auto`` cannot be pulled.  Follows istio/istio
pkg/config/analysis/analyzers/webhook/webhook.go and injection/image-auto.go.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import product
from typing import Any

from commands.analyze import analyzer, report
from commands.checks.registry import CheckContext
from commands.cluster.selectors import label_selector_matches
from commands.cluster.snapshot import Resource
from commands.findings import Finding
from commands.shapes import mapping, mappings

REVISION_LABEL = "istio.io/rev"
ISTIO_WEBHOOK_SUFFIX = "istio.io"
SIDECAR_CONTAINER, AUTO_IMAGE = "istio-proxy", "auto"


@dataclass(frozen=True)
class Webhook:
    configuration: Resource
    name: str
    namespace_selector: Mapping[str, Any] | None
    object_selector: Mapping[str, Any] | None
    service: Mapping[str, Any] | None

    @property
    def key(self) -> str:
        return f"{self.configuration.name}/{self.name}"

    def selects(self, namespace_labels: Mapping[str, str], object_labels: Mapping[str, str]) -> bool:
        # An absent selector matches everything (admissionregistration/v1 MutatingWebhook).
        return (label_selector_matches(self.namespace_selector, namespace_labels)
                and label_selector_matches(self.object_selector, object_labels))


def webhooks_of(configuration: Resource) -> list[Webhook]:
    return [Webhook(configuration, str(hook.get("name") or ""), _selector(hook.get("namespaceSelector")),
                    _selector(hook.get("objectSelector")), _service(hook))
            for hook in mappings(configuration.body.get("webhooks"))]


def _selector(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _service(hook: Mapping[str, Any]) -> Mapping[str, Any] | None:
    service = mapping(hook.get("clientConfig")).get("service")
    return service if isinstance(service, Mapping) else None


def istio_webhooks(configurations: Iterable[Resource]) -> list[Webhook]:
    """Hooks named ``*istio.io``, and every hook of a configuration that names a revision."""
    found: list[Webhook] = []
    for configuration in configurations:
        hooks = webhooks_of(configuration)
        if revisions_of(configuration) or any(h.name.endswith(ISTIO_WEBHOOK_SUFFIX) for h in hooks):
            found.extend(hooks)
    return found


def revisions_of(configuration: Resource) -> set[str]:
    """webhook.go extractRevisions: istio.io/rev on the configuration or in any hook's selectors."""
    revisions = {str(configuration.labels[REVISION_LABEL])} if REVISION_LABEL in configuration.labels else set()
    for hook in webhooks_of(configuration):
        for selector in (hook.namespace_selector, hook.object_selector):
            selector = mapping(selector)
            if REVISION_LABEL in mapping(selector.get("matchLabels")):
                revisions.add(str(selector["matchLabels"][REVISION_LABEL]))
            for expression in mappings(selector.get("matchExpressions")):
                if expression.get("key") == REVISION_LABEL:
                    revisions.update(str(v) for v in expression.get("values") or ())
    return revisions


def label_permutations(key: str, on: str, off: str, revisions: Iterable[str]) -> list[dict[str, str]]:
    """webhook.go getNamespaceLabels/getObjectLabels: unlabelled, on, off, each again with every revision."""
    base = [{}, {key: on}, {key: off}]
    return base + [{**labels, REVISION_LABEL: rev} for rev in sorted(revisions) for labels in base]


@analyzer("webhook.Analyzer", inputs=("MutatingWebhookConfiguration", "Service"))
def invalid_webhooks(ctx: CheckContext) -> list[Finding]:
    """IST0139 for injection webhooks selecting the same pod, or calling a Service that does not exist."""
    configurations = ctx.snapshot.of_kind("MutatingWebhookConfiguration")
    hooks = istio_webhooks(configurations)
    revisions = set().union(*(revisions_of(c) for c in configurations)) if configurations else set()
    findings: list[Finding] = []
    reported: set[tuple[str, tuple[str, ...]]] = set()
    namespaces = label_permutations("istio-injection", "enabled", "disabled", revisions)
    objects = label_permutations("sidecar.istio.io/inject", "true", "false", revisions)
    for namespace_labels, object_labels in product(namespaces, objects):
        matching = sorted({h.key: h for h in hooks if h.selects(namespace_labels, object_labels)}.items())
        if len(matching) < 2:
            continue
        for key, hook in matching:
            others = tuple(k for k, _ in matching if k != key)
            if (key, others) in reported:
                continue
            reported.add((key, others))
            findings.append(report("IST0139", hook.configuration, error=(
                f"Webhook overlaps with others: [{' '.join(others)}]. This may cause injection to occur twice.")))
    for hook in hooks:
        if hook.service is None:
            continue  # a URL, not a Service
        namespace, name = str(hook.service.get("namespace") or ""), str(hook.service.get("name") or "")
        if ctx.snapshot.get("Service", namespace, name) is None:
            findings.append(report("IST0139", hook.configuration, error=(
                f"Injector refers to a control plane service that does not exist: {namespace}/{name}.")))
    return findings


def has_auto_image(pod_spec: Mapping[str, Any]) -> bool:
    for container in mappings(pod_spec.get("containers")):  # a plain loop: this runs for every pod of the mesh
        if container.get("name") == SIDECAR_CONTAINER and container.get("image") == AUTO_IMAGE:
            return True
    return False


@analyzer("injection.ImageAutoAnalyzer", inputs=("Namespace", "Pod", "Deployment", "MutatingWebhookConfiguration"))
def image_auto(ctx: CheckContext) -> list[Finding]:
    """IST0147 for a Pod still holding ``image: auto`` (never injected); IST0146 for a Deployment no webhook selects."""
    findings = [report("IST0147", pod, resource_type="Pod", resource_name=pod.name)
                for pod in ctx.snapshot.of_kind("Pod") if has_auto_image(pod.spec)]
    hooks = [h for c in ctx.snapshot.of_kind("MutatingWebhookConfiguration") for h in webhooks_of(c)
             if h.name.endswith(ISTIO_WEBHOOK_SUFFIX)]
    for deployment in ctx.snapshot.of_kind("Deployment"):
        template = mapping(deployment.spec.get("template"))
        if not has_auto_image(mapping(template.get("spec"))):
            continue
        namespace = ctx.snapshot.get("Namespace", None, deployment.namespace or "default")
        namespace_labels = namespace.labels if namespace else {}
        pod_labels = mapping(mapping(template.get("metadata")).get("labels"))
        if not any(h.selects(namespace_labels, pod_labels) for h in hooks):
            findings.append(report("IST0146", deployment, resource_type="Deployment", resource_name=deployment.name))
    return findings
