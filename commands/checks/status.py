"""The ``status`` check: control plane (istiod, gateways) and sidecar health from pod status."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

from commands import codes
from commands.checks.registry import CheckContext, check
from commands.findings import Finding, Remediation
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


@check("status", kinds=("Pod", "PodMetrics", "Deployment"),
       summary="istiod, gateway and sidecar health: readiness, restarts, OOMKilled, CrashLoopBackOff, memory")
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
            remediation=Remediation("Check the istiod Deployment and its events",
                                    command=f"kubectl -n {snapshot.istio_namespace} describe deployment istiod")))
    for pod in snapshot.of_kind("Pod"):
        if not ctx.in_scope(pod.namespace):
            continue
        role = control_plane_role(pod)
        if role:
            findings.extend(_control_plane_findings(pod, role, usage, ctx))
        elif has_sidecar(pod):
            findings.extend(_sidecar_findings(pod, usage, ctx))
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


def _memory_limit(pod: Resource, container: str) -> float | None:
    spec = container_spec(pod, container) or {}
    return parse_bytes(((spec.get("resources") or {}).get("limits") or {}).get("memory"))



def _restart_remediation(pod: Resource, what: str) -> Remediation:
    deployment = owner_deployment(pod)
    if deployment:
        return Remediation(f"Restart {what} once the cause is fixed",
                           command=f"kubectl -n {pod.namespace} rollout restart deployment/{deployment}",
                           action=f"restart {deployment} -n {pod.namespace}")
    return Remediation("Delete the pod so its controller recreates it",
                       command=f"kubectl -n {pod.namespace} delete pod {pod.name}")


def _raise_memory_remediation(pod: Resource, container: str, limit: float | None) -> Remediation:
    """Doubling the limit is the runbook's first move for an OOMKilled control plane."""
    deployment = owner_deployment(pod)
    restart = _restart_remediation(pod, "it")
    if not deployment or not limit:
        return restart
    new_limit = f"{int(limit * 2 / 2**20)}Mi"
    return Remediation(f"Raise the memory limit of {deployment}/{container} (to {new_limit}), which restarts it",
                       command=f"kubectl -n {pod.namespace} set resources deployment/{deployment} -c {container} "
                               f"--limits=memory={new_limit}",
                       action=restart.action)


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
        args = dict(role=role, container=health.name, pod=pod.qualified_name, restarts=health.restarts)
        if health.oom_killed:
            yield codes.finding("MB1002", origin=pod.origin, evidence=evidence, limit=limit_text,
                                remediation=_raise_memory_remediation(pod, health.name, limit), **args)
        if health.crash_looping:
            yield codes.finding("MB1003", origin=pod.origin, evidence=evidence,
                                remediation=Remediation("Read the crashing container's previous log",
                                                        command=f"kubectl -n {pod.namespace} logs {pod.name} "
                                                                f"-c {health.name} --previous"),
                                **args)
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
                            remediation=Remediation(
                                "Read the sidecar's previous log; if the mesh is the cause, bypass it for "
                                "this workload (needs approval)",
                                command=f"kubectl -n {pod.namespace} logs {pod.name} -c istio-proxy --previous",
                                action=_bypass_action(pod)))
    if health.oom_killed:
        yield codes.finding("MB1012", origin=pod.origin, evidence=evidence, pod=name, restarts=health.restarts,
                            limit=limit_text, remediation=_restart_remediation(pod, "the workload"))
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
                            total=tally["total"], ready=tally["ready"], crashlooping=tally["crashlooping"],
                            restarting=tally["restarting"], evidence=dict(tally))
