"""Admission: can the cluster create pods in the mesh right now?  Part of the ``status`` check.

Three ways a mesh outage stops new pods, each read from objects the API server already holds:

- the sidecar-injector webhook fails closed and nothing answers behind its Service (MB1040);
- a namespace asks for an Istio revision (or tag) that no injector webhook serves (MB1041);
- a workload's pods are being refused: its Deployment's ``ReplicaFailure`` condition or ``FailedCreate``
  Warning Events from the ReplicaSet controller (MB1042).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from commands import codes
from commands.checks.registry import CheckContext
from commands.cluster.injection import REVISION_LABEL, NamespaceInjection
from commands.cluster.pods import not_ready, terminating
from commands.cluster.selectors import label_selector_matches, matches
from commands.cluster.snapshot import Resource, Snapshot
from commands.findings import Finding, Remediation

# Istio names its injector webhooks ``*.sidecar-injector.istio.io`` (namespace./object. and rev.namespace./
# rev.object. variants, manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml).
INJECTOR_SUFFIX = "sidecar-injector.istio.io"
# The webhook configuration's own labels: istio.io/rev for a revision's webhook, istio.io/tag for a revision
# tag's (istioctl/pkg/tag/generate.go).
TAG_LABEL = "istio.io/tag"
# The kube-apiserver's message when it cannot call a webhook (staging/src/k8s.io/apiserver/pkg/admission/plugin/
# webhook/errors: "failed calling webhook"); the ReplicaSet controller records it as a FailedCreate Event
# (pkg/controller/replicaset/replica_set.go) and the Deployment copies it into ReplicaFailure
# (pkg/controller/deployment/sync.go).
WEBHOOK_FAILURE = "failed calling webhook"


@dataclass(frozen=True)
class InjectorWebhook:
    configuration: str
    name: str
    service: tuple[str, str] | None
    """(namespace, name) of the Service the API server calls; None for a URL webhook."""
    namespace_selector: Mapping[str, Any]
    object_selector: Mapping[str, Any]
    fails_closed: bool
    revision: str | None

    @property
    def every_pod_of_a_namespace(self) -> bool:
        """False for the object-level webhooks, which only take pods that opt in by label (their objectSelector
        requires ``sidecar.istio.io/inject: "true"`` or ``istio.io/rev``): their namespaces lose only those pods."""
        selector = self.object_selector
        if selector.get("matchLabels"):
            return False
        return all(e.get("operator") in ("NotIn", "DoesNotExist") for e in selector.get("matchExpressions") or ())


def injector_webhooks(snapshot: Snapshot) -> list[InjectorWebhook]:
    found = []
    for config in snapshot.of_kind("MutatingWebhookConfiguration"):
        revision = config.labels.get(TAG_LABEL) or config.labels.get(REVISION_LABEL)
        for hook in config.body.get("webhooks") or ():
            if not str(hook.get("name", "")).endswith(INJECTOR_SUFFIX):
                continue
            service = (hook.get("clientConfig") or {}).get("service")
            found.append(InjectorWebhook(
                configuration=config.name, name=str(hook.get("name")),
                service=(service.get("namespace", ""), service.get("name", "")) if service else None,
                namespace_selector=hook.get("namespaceSelector") or {},
                object_selector=hook.get("objectSelector") or {},
                # admissionregistration/v1 defaults failurePolicy to Fail.
                fails_closed=hook.get("failurePolicy", "Fail") == "Fail",
                revision=revision))
    return found


def admission_findings(ctx: CheckContext) -> Iterator[Finding]:
    snapshot = ctx.snapshot
    webhooks = injector_webhooks(snapshot) if snapshot.can_trust_absence("MutatingWebhookConfiguration") else []
    namespaces = [ns for ns in snapshot.of_kind("Namespace")]
    yield from _unreachable_webhooks(snapshot, webhooks, namespaces, ctx)
    if webhooks:
        yield from _unserved_revisions(webhooks, namespaces, ctx)
    yield from _blocked_workloads(snapshot, ctx)


# -- the webhook has nobody behind it --------------------------------------------------------------------

def _backends(snapshot: Snapshot, service: tuple[str, str]) -> list[Resource] | None:
    """Pods behind ``service`` (None when the Service is not in the snapshot: nothing to judge)."""
    namespace, name = service
    svc = snapshot.get("Service", namespace, name)
    if svc is None or not snapshot.can_trust_absence("Pod"):
        return None
    selector = svc.spec.get("selector") or {}
    if not selector:
        return None  # a selector-less Service has hand-made Endpoints meshbot does not read
    return [p for p in snapshot.of_kind("Pod", namespace) if matches(selector, p.labels)]


def _selected(webhook: InjectorWebhook, namespaces: Sequence[Resource]) -> list[str]:
    if not webhook.every_pod_of_a_namespace:
        return []
    return sorted(ns.name for ns in namespaces if label_selector_matches(webhook.namespace_selector, ns.labels))


def _unreachable_webhooks(snapshot: Snapshot, webhooks: Sequence[InjectorWebhook], namespaces: Sequence[Resource],
                          ctx: CheckContext) -> Iterator[Finding]:
    by_service: dict[tuple[str, str], list[InjectorWebhook]] = {}
    for hook in webhooks:
        if hook.service and hook.fails_closed:
            by_service.setdefault(hook.service, []).append(hook)
    for service, hooks in sorted(by_service.items()):
        pods = _backends(snapshot, service)
        if pods is None or any(not not_ready(p) and not terminating(p) for p in pods):
            continue
        selected = sorted({ns for hook in hooks for ns in _selected(hook, namespaces)})
        selected = [ns for ns in selected if ctx.in_scope(ns)] if ctx.namespace else selected
        if ctx.namespace and not selected:
            continue
        reason = (f"Service {service[0]}/{service[1]} has no Ready pod" if pods
                  else f"Service {service[0]}/{service[1]} selects no pod")
        scope = _namespace_list(selected) if selected else "any namespace (pods that opt in by label)"
        yield codes.finding(
            "MB1040", origin=f"MutatingWebhookConfiguration {hooks[0].configuration}", webhook=hooks[0].configuration,
            reason=reason, scope=scope,
            evidence={"webhooks": [h.name for h in hooks], "service": "/".join(service), "namespaces": selected},
            # The webhook is istiod (its Service is istiod's): the fix is istiod, and restarting workloads only
            # loses their pods.  Failing open instead is an istiod install setting (values.sidecarInjectorWebhook
            # ... failurePolicy is fixed to Fail in the chart), so it is not offered as a first step.
            remediation=Remediation(
                f"Bring back what serves the webhook ({service[1]} in {service[0]}) before restarting or scaling "
                "anything in those namespaces; until then new pods there are refused",
                command=f"kubectl -n {service[0]} get pods,endpoints -l app={service[1]}"))


def _namespace_list(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# -- a revision nobody serves ---------------------------------------------------------------------------------

def _unserved_revisions(webhooks: Sequence[InjectorWebhook], namespaces: Sequence[Resource],
                        ctx: CheckContext) -> Iterator[Finding]:
    served = sorted({h.revision or "default" for h in webhooks})
    for namespace in namespaces:
        labels = NamespaceInjection.of_labels(namespace.labels)
        # istio-injection wins over istio.io/rev (commands.cluster.injection): with it set, the namespace is either
        # injected by the default webhook or opted out, so only istio.io/rev alone asks for a revision.
        if labels.injection is not None or labels.revision is None or not ctx.in_scope(namespace.name):
            continue
        revision = labels.injector_revision
        if any(label_selector_matches(h.namespace_selector, namespace.labels) for h in webhooks):
            continue
        yield codes.finding(
            "MB1041", origin=f"Namespace {namespace.name}", namespace=namespace.name, revision=revision,
            served="[" + " ".join(served) + "]",
            evidence={"revision": revision, "served": served},
            remediation=Remediation(
                "Point the namespace at a revision that is served (or install that revision / tag) before any "
                "pod there restarts; pods already running keep their sidecar",
                command=f"kubectl label namespace {namespace.name} {REVISION_LABEL}={served[0]} --overwrite"))


# -- workloads whose pods are refused -----------------------------------------------------------------------------

def _blocked_workloads(snapshot: Snapshot, ctx: CheckContext) -> Iterator[Finding]:
    seen: set[tuple[str, str]] = set()
    for deployment in snapshot.of_kind("Deployment"):
        if not ctx.in_scope(deployment.namespace):
            continue
        for condition in deployment.status.get("conditions") or ():
            if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
                key = (deployment.namespace or "", deployment.name)
                seen.add(key)
                message = str(condition.get("message", condition.get("reason", "")))
                yield _blocked(f"Deployment {deployment.qualified_name}", deployment.namespace, message, 1,
                               str(condition.get("lastUpdateTime", "unknown")))
    for owner, (namespace, message, count, last) in sorted(_failed_create_events(snapshot, ctx).items()):
        if (namespace, _deployment_of_replicaset(owner)) in seen:
            continue
        yield _blocked(f"ReplicaSet {namespace}/{owner}", namespace, message, count, last)


def _failed_create_events(snapshot: Snapshot, ctx: CheckContext) -> dict[str, tuple[str, str, int, str]]:
    found: dict[str, tuple[str, str, int, str]] = {}
    for event in snapshot.of_kind("Event"):
        if event.body.get("reason") != "FailedCreate" or event.body.get("type", "Warning") != "Warning":
            continue
        involved = event.body.get("involvedObject") or {}
        namespace = involved.get("namespace") or event.namespace or ""
        if involved.get("kind") != "ReplicaSet" or not ctx.in_scope(namespace):
            continue
        count = int(event.body.get("count") or (event.body.get("series") or {}).get("count") or 1)
        last = str(event.body.get("lastTimestamp") or event.body.get("eventTime") or "unknown")
        name = str(involved.get("name"))
        previous = found.get(name)
        if previous is None or last >= previous[3]:
            total = count + (previous[2] if previous else 0)
            found[name] = (namespace, str(event.body.get("message", "")), total, last)
    return found


def _deployment_of_replicaset(name: str) -> str:
    # ReplicaSets of a Deployment are named DEPLOYMENT-<pod-template-hash> (pkg/controller/deployment/sync.go).
    head, _, tail = name.rpartition("-")
    return head if head and tail.isalnum() else name


def _blocked(owner: str, namespace: str | None, message: str, count: int, last: str) -> Finding:
    webhook = WEBHOOK_FAILURE in message
    reason = _shorten(message)
    if webhook:
        summary = ("The API server refuses the new pods because an admission webhook cannot be called; fix the "
                   "webhook's backend (for Istio's injector: istiod) rather than restarting the workload")
    else:
        summary = "Read why the pods are refused (quota, admission policy, service account) before changing anything"
    return codes.finding(
        "MB1042", origin=owner, owner=owner, reason=reason, count=count, last_seen=last,
        evidence={"namespace": namespace, "message": message, "webhook": webhook},
        remediation=Remediation(summary, command=f"kubectl -n {namespace} describe {owner.split(' ')[0].lower()} "
                                                 f"{owner.split('/')[-1]}"))


def _shorten(message: str, limit: int = 200) -> str:
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 1] + "\u2026"
