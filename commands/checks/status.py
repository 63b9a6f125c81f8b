"""The ``status`` check: control plane (istiod, gateways) and sidecar health from pod status."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

from commands import codes
from commands.checks.admission import admission_findings
from commands.checks.registry import CheckContext, check
from commands.cluster.pods import (
    ISTIOD_CONTAINER,
    SIDECAR_CONTAINER,
    ContainerHealth,
    container_health,
    container_spec,
    control_plane_role,
    has_sidecar,
    is_istiod,
    owner_deployment,
    sidecar_health,
)
from commands.cluster.quantity import human_bytes, parse_bytes
from commands.cluster.snapshot import Resource, Snapshot
from commands.findings import Finding, Remediation


@check("status", kinds=("Pod", "PodMetrics", "Deployment", "Namespace", "Service", "MutatingWebhookConfiguration",
                        "Event"),
       summary="istiod, gateway and sidecar health (readiness, restarts, OOMKilled, CrashLoopBackOff, memory) and "
               "whether new pods can be admitted (injection webhook, revisions, refused pod creation)")
def status(ctx: CheckContext) -> list[Finding]:
    snapshot = ctx.snapshot
    usage = memory_usage_by_container(snapshot)
    findings: list[Finding] = []
    if not snapshot.can_trust_absence("Pod"):
        return findings  # the read problem is already reported; absence of pods proves nothing
    istiods = [p for p in snapshot.of_kind("Pod", snapshot.istio_namespace) if is_istiod(p)]
    if not istiods and ctx.in_scope(snapshot.istio_namespace):
        findings.append(codes.finding(
            "MB1006", origin=f"Namespace {snapshot.istio_namespace}", namespace=snapshot.istio_namespace,
            # Every revision's istiod Deployment carries app=istiod, so the selector also finds canaries
            # (manifests/charts/istio-control/istio-discovery/templates/deployment.yaml).
            remediation=Remediation(
                "Find why no istiod pod runs: a Deployment scaled to 0, a rollout that failed, pods that cannot be "
                "scheduled, or istiod uninstalled; restarting has nothing to restart",
                command=f"kubectl -n {snapshot.istio_namespace} describe deployment -l app=istiod")))
    for pod in snapshot.of_kind("Pod"):
        if not ctx.in_scope(pod.namespace):
            continue
        role = control_plane_role(pod)
        if role:
            findings.extend(_control_plane_findings(pod, role, usage, ctx))
        elif has_sidecar(pod):
            findings.extend(_sidecar_findings(pod, usage, ctx))
    findings.extend(admission_findings(ctx))
    findings.extend(_namespace_summaries(snapshot, ctx))
    return findings


def memory_usage_by_container(snapshot: Snapshot) -> dict[tuple[str | None, str, str], float]:
    """(namespace, pod, container) -> bytes, from metrics.k8s.io PodMetrics."""
    usage: dict[tuple[str | None, str, str], float] = {}
    for metrics in snapshot.of_kind("PodMetrics"):
        for container in metrics.body.get("containers") or []:
            value = parse_bytes((container.get("usage") or {}).get("memory"))
            if value is not None:
                usage[(metrics.namespace, metrics.name, container.get("name", ""))] = value
    return usage


# Where the remediations below come from (istio/istio paths unless a URL):
# - istiod's Helm chart requests 2048Mi and sets no memory limit; the gateway chart limits istio-proxy to
#   1024Mi. Both read `resources` from their values, so a later `helm upgrade` puts back whatever a kubectl
#   edit changed (manifests/charts/istio-control/istio-discovery/values.yaml, manifests/charts/gateway/values.yaml).
# - istiod's memory grows with the configuration and proxies it tracks, not with a restart
#   (https://istio.io/latest/docs/ops/deployment/performance-and-scalability/#control-plane-performance).
# - Sidecar resources: the injector reads sidecar.istio.io/proxyCPU, proxyMemory, proxyCPULimit and
#   proxyMemoryLimit from the pod, and once any of them is set it drops the defaults of global.proxy.resources
#   (manifests/charts/istio-control/istio-discovery/files/injection-template.yaml, define "resources");
#   Kubernetes then uses a container's limit as its request when no request is given
#   (https://kubernetes.io/docs/concepts/configuration/manage-resources-containers/#requests-and-limits).
# - Bypass: the pod label sidecar.istio.io/inject=false wins over the annotation and the namespace label
#   (pkg/kube/inject/inject.go injectRequired;
#   https://istio.io/latest/docs/setup/additional-setup/sidecar-injection/#controlling-the-injection-policy).
#   A pod without a sidecar has no mTLS identity: STRICT servers refuse its plaintext and nothing enforces its
#   AuthorizationPolicies (https://istio.io/latest/docs/concepts/security/#peer-authentication,
#   #authorization-architecture).
PROXY_RESOURCE_ANNOTATIONS = (
    ("requests", "cpu", "sidecar.istio.io/proxyCPU"),
    ("requests", "memory", "sidecar.istio.io/proxyMemory"),
    ("limits", "cpu", "sidecar.istio.io/proxyCPULimit"),
    ("limits", "memory", "sidecar.istio.io/proxyMemoryLimit"),
)
ISTIOD_CHART_MEMORY_REQUEST = "2048Mi"
KEEP_IN_VALUES = ("then set the same value in the Helm values that installed it (resources), or the next "
                  "helm upgrade puts the old one back")


def _resources(pod: Resource, container: str) -> Mapping[str, Mapping[str, Any]]:
    return (container_spec(pod, container) or {}).get("resources") or {}


def _memory_limit(pod: Resource, container: str) -> float | None:
    return parse_bytes((_resources(pod, container).get("limits") or {}).get("memory"))


def _memory_request(pod: Resource, container: str) -> float | None:
    return parse_bytes((_resources(pod, container).get("requests") or {}).get("memory"))


def _mebibytes(value: float) -> str:
    return f"{int(value / 2**20)}Mi"


def _restart_action(pod: Resource) -> str | None:
    deployment = owner_deployment(pod)
    return f"restart {deployment} -n {pod.namespace}" if deployment else None


def _raise_memory_remediation(pod: Resource, container: str) -> Remediation:
    """An OOMKilled istiod or gateway needs more memory first: restarted at the same limit, it is killed again.

    Doubling is a first step for an outage, not a sizing rule.  The action offered is meshbot's approval-gated
    ``memory`` (commands/actions/memory.py), the same change as the command; a restart is not offered, since
    at the same limit it is OOMKilled again.
    """
    deployment = owner_deployment(pod)
    if not deployment:
        return Remediation(f"Raise the memory limit of {container} in whatever created {pod.qualified_name} (it has "
                           "no Deployment); a new pod with the same limit is OOMKilled again")
    target = f"deployment/{deployment} -c {container}"
    limit = _memory_limit(pod, container)
    if limit:
        new_limit = _mebibytes(limit * 2)
        return Remediation(
            f"Raise the memory limit of {deployment}/{container} first, from {human_bytes(limit)} to {new_limit} "
            f"(the command rolls its pods), {KEEP_IN_VALUES}. A restart alone keeps the {human_bytes(limit)} "
            "limit and is OOMKilled again.",
            command=f"kubectl -n {pod.namespace} set resources {target} --limits=memory={new_limit}",
            action=f"memory {deployment} -n {pod.namespace} --limit {new_limit} --container {container}")
    request = _memory_request(pod, container)
    new_request = _mebibytes(request * 2) if request else ISTIOD_CHART_MEMORY_REQUEST
    return Remediation(
        f"{deployment}/{container} has no memory limit, so it was killed because its node ran out of memory. "
        f"Raise its memory request to {new_request} first so the scheduler places it where that memory is free "
        f"(the command rolls its pods; if no node has that much unreserved, the new pod stays Pending), "
        f"{KEEP_IN_VALUES}. A restart alone can land on a node as short of memory and be OOMKilled again.",
        command=f"kubectl -n {pod.namespace} set resources {target} --requests=memory={new_request}",
        action=f"memory {deployment} -n {pod.namespace} --request {new_request} --container {container}")


def _crash_loop_remediation(pod: Resource, health: ContainerHealth) -> Remediation:
    if health.oom_killed:
        raise_first = _raise_memory_remediation(pod, health.name)
        return Remediation(f"It crash-loops because it is OOMKilled. {raise_first.summary}",
                           command=raise_first.command)
    # `kubectl logs --previous` prints the run that exited (https://kubernetes.io/docs/reference/kubectl/generated/
    # kubectl_logs/); a crash that is not an OOMKill repeats on restart until its cause is fixed.
    return Remediation("Read the crashing container's previous log for why it exits; restarted before that cause "
                       "is fixed, it crashes the same way",
                       command=f"kubectl -n {pod.namespace} logs {pod.name} -c {health.name} --previous")


def _sidecar_memory_remediation(pod: Resource) -> Remediation:
    """Raise the sidecar's limit through the injector's annotations, keeping the other three values."""
    deployment = owner_deployment(pod)
    limit = _memory_limit(pod, SIDECAR_CONTAINER)
    if not deployment or not limit:
        return Remediation("Raise the sidecar's memory with the sidecar.istio.io/proxyMemoryLimit and proxyMemory "
                           "annotations on the pod template of whatever created it; recreated with the same "
                           "memory, it is OOMKilled again", action=_restart_action(pod))
    resources = _resources(pod, SIDECAR_CONTAINER)
    annotations = {name: str((resources.get(kind) or {})[resource])
                   for kind, resource, name in PROXY_RESOURCE_ANNOTATIONS
                   if (resources.get(kind) or {}).get(resource) is not None}
    new_limit = _mebibytes(limit * 2)
    annotations["sidecar.istio.io/proxyMemoryLimit"] = new_limit
    patch = json.dumps({"spec": {"template": {"metadata": {"annotations": annotations}}}}, separators=(",", ":"))
    return Remediation(
        f"Raise the sidecar's memory limit from {human_bytes(limit)} to {new_limit} with the pod-template "
        "annotation sidecar.istio.io/proxyMemoryLimit (the patch rolls the pods and the injector applies it). The "
        "command also pins the sidecar's current CPU and memory request and CPU limit, because once one of these "
        "annotations is set the injector drops its defaults and Kubernetes would request the whole limit. A "
        f"restart alone keeps the {human_bytes(limit)} limit and is OOMKilled again.",
        command=f"kubectl -n {pod.namespace} patch deployment/{deployment} --type merge -p '{patch}'",
        action=_restart_action(pod))


def _bypass_remediation(pod: Resource, health: ContainerHealth) -> Remediation:
    first = ("The sidecar is OOMKilled: raise its memory first (the OOMKilled finding) rather than leave the mesh. "
             if health.oom_killed else "")
    return Remediation(
        f"{first}Read the sidecar's previous log; if the mesh is the cause, bypass it for this workload (needs "
        "approval). Bypassing rolls its pods without a sidecar: they leave mTLS, nothing enforces their "
        "AuthorizationPolicies, their calls to servers with STRICT mTLS fail, and so do callers whose "
        "DestinationRule demands ISTIO_MUTUAL for them.",
        command=f"kubectl -n {pod.namespace} logs {pod.name} -c {SIDECAR_CONTAINER} --previous",
        action=_bypass_action(pod))


def _evidence(pod: Resource, health: ContainerHealth, **extra: Any) -> dict[str, Any]:
    evidence: dict[str, Any] = {
        "container": health.name, "ready": health.ready, "restarts": health.restarts,
        "phase": pod.status.get("phase"), "node": pod.spec.get("nodeName"),
    }
    if health.waiting_reason:
        evidence["waiting_reason"] = health.waiting_reason
    if health.last_terminated_reason:
        evidence["last_terminated_reason"] = health.last_terminated_reason
    evidence.update({k: v for k, v in extra.items() if v is not None})
    return evidence


def _control_plane_findings(pod: Resource, role: str, usage: Mapping, ctx: CheckContext) -> Iterator[Finding]:
    consequence = ("sidecars get no config or certificate updates from it" if role == "istiod"
                   else "traffic through this gateway may fail")
    ready = _pod_ready(pod)
    main = ISTIOD_CONTAINER if role == "istiod" else SIDECAR_CONTAINER
    for health in container_health(pod):
        limit = _memory_limit(pod, health.name)
        limit_text = human_bytes(limit) if limit else "unset"
        evidence = _evidence(pod, health, memory_limit=limit_text)
        args: dict[str, Any] = dict(role=role, container=health.name, pod=pod.qualified_name, restarts=health.restarts)
        if health.oom_killed:
            yield codes.finding("MB1002", origin=pod.origin, evidence=evidence, limit=limit_text,
                                remediation=_raise_memory_remediation(pod, health.name), **args)
        if health.crash_looping:
            yield codes.finding("MB1003", origin=pod.origin, evidence=evidence,
                                remediation=_crash_loop_remediation(pod, health), **args)
        elif health.restarts >= ctx.thresholds.restart_warning and not health.oom_killed:
            yield codes.finding("MB1004", origin=pod.origin, evidence=evidence, **args)
        yield from _memory_near_limit("MB1005", pod, health.name, usage, ctx, role=role)
    if not ready and not any(h.crash_looping for h in container_health(pod)):
        yield codes.finding("MB1001", origin=pod.origin, role=role, pod=pod.qualified_name,
                            phase=pod.status.get("phase", "Unknown"), consequence=consequence,
                            evidence={"phase": pod.status.get("phase"), "conditions": _conditions(pod),
                                      "container": main})


def _sidecar_findings(pod: Resource, usage: Mapping, ctx: CheckContext) -> Iterator[Finding]:
    health = sidecar_health(pod)
    if health is None:
        return
    limit = _memory_limit(pod, SIDECAR_CONTAINER)
    limit_text = human_bytes(limit) if limit else "unset"
    evidence = _evidence(pod, health, memory_limit=limit_text)
    name = pod.qualified_name
    if health.crash_looping:
        yield codes.finding("MB1011", origin=pod.origin, evidence=evidence, pod=name, restarts=health.restarts,
                            remediation=_bypass_remediation(pod, health))
    if health.oom_killed:
        yield codes.finding("MB1012", origin=pod.origin, evidence=evidence, pod=name, restarts=health.restarts,
                            limit=limit_text, remediation=_sidecar_memory_remediation(pod))
    if not health.ready and not health.crash_looping and pod.status.get("phase") == "Running":
        yield codes.finding("MB1013", origin=pod.origin, evidence=evidence, pod=name)
    if (health.restarts >= ctx.thresholds.restart_warning and not health.crash_looping
            and not health.oom_killed):
        yield codes.finding("MB1014", origin=pod.origin, evidence=evidence, pod=name, restarts=health.restarts)
    yield from _memory_near_limit("MB1015", pod, SIDECAR_CONTAINER, usage, ctx)


def _bypass_action(pod: Resource) -> str | None:
    deployment = owner_deployment(pod)
    return f"bypass {deployment} -n {pod.namespace}" if deployment else None


def _memory_near_limit(code: str, pod: Resource, container: str, usage: Mapping, ctx: CheckContext,
                       **args: Any) -> Iterator[Finding]:
    used = usage.get((pod.namespace, pod.name, container))
    limit = _memory_limit(pod, container)
    if used is None or not limit:
        return
    ratio = used / limit
    if ratio < ctx.thresholds.memory_near_limit_ratio:
        return
    yield codes.finding(code, origin=pod.origin, container=container, pod=pod.qualified_name,
                        usage=human_bytes(used), limit=human_bytes(limit), percent=round(ratio * 100),
                        evidence={"container": container, "usage_bytes": int(used), "limit_bytes": int(limit)},
                        **args)


def _pod_ready(pod: Resource) -> bool:
    for condition in pod.status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    statuses = pod.status.get("containerStatuses") or []
    return bool(statuses) and all(cs.get("ready") for cs in statuses)


def _conditions(pod: Resource) -> dict[str, str]:
    return {c.get("type", "?"): c.get("status", "?") for c in pod.status.get("conditions") or []}


def _namespace_summaries(snapshot: Snapshot, ctx: CheckContext) -> Iterator[Finding]:
    counts: dict[str, Counter] = defaultdict(Counter)
    for pod in snapshot.of_kind("Pod"):
        if not ctx.in_scope(pod.namespace) or not has_sidecar(pod):
            continue
        health = sidecar_health(pod)
        tally = counts[pod.namespace or "default"]
        tally["total"] += 1
        if health is None:
            continue
        tally["ready"] += health.ready
        tally["crashlooping"] += health.crash_looping
        tally["restarting"] += (health.restarts >= ctx.thresholds.restart_warning and not health.crash_looping)
    for namespace in sorted(counts):
        tally = counts[namespace]
        yield codes.finding("MB1020", origin=f"Namespace {namespace}", namespace=namespace,
                            sidecars=f"{tally['total']} sidecar{'s' * (tally['total'] != 1)}", ready=tally["ready"], crashlooping=tally["crashlooping"],
                            restarting=tally["restarting"], evidence=dict(tally))
