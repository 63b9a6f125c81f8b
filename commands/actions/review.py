"""What an approver must see beside the diff: blast radius, policies a bypass switches off, whether a restart
alone helps, and the undo with its risk.  Read from the cluster and a fresh diagnosis when the plan is made."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from commands.actions.targets import ActionName, ActionTarget, Scope
from commands.authz.evaluate import Workload, selecting_policies
from commands.authz.policy import parse_policy
from commands.clients.kube import KubeClient
from commands.cluster.snapshot import Resource
from commands.errors import MeshbotError
from commands.findings import Finding
from commands.telemetry.callers import WINDOW, Caller
from commands.times import human_duration

OOM_KILLED = "MB1002"
CRASH_LOOP = "MB1003"
MAX_NAMES = 6
NO_PROMETHEUS = "Callers: not known without Prometheus (set MESHBOT_PROMETHEUS_URL to name them from Istio's metrics)"

CallerReader = Callable[[str, str | None], list[Caller] | None]
"""(namespace, workload or None) -> the busiest source workloads calling it, from Prometheus; None when no
Prometheus is configured (``MeshInspector.callers``)."""

UNDO: dict[ActionName, tuple[str, str]] = {
    ActionName.PERMISSIVE_MTLS: (
        "Rollback restores the previous mTLS modes and removes meshbot's PeerAuthentication and DestinationRule.",
        "If the certificates are still broken (root still expired, CA still down), mTLS fails again the moment "
        "it is restored: roll back only once the cause is fixed "
        "(https://istio.io/latest/docs/ops/configuration/security/root-transition/)."),
    ActionName.BYPASS: (
        "Rollback restores injection and rolls the pods, so they get their sidecars back.",
        "The new pods need the injection webhook (failurePolicy Fail) and the CA: while either fails they are "
        "refused or never become Ready (https://istio.io/latest/docs/ops/configuration/mesh/webhook/)."),
    ActionName.MEMORY: (
        "Rollback puts the previous memory back and rolls the pods.",
        "At the old limit the container is OOMKilled again under the same load "
        "(https://kubernetes.io/docs/concepts/configuration/manage-resources-containers/#if-you-do-not-specify-a-"
        "memory-limit)."),
    ActionName.RESTART: ("No undo: replaced pods cannot be brought back.", ""),
}


@dataclass(frozen=True)
class Review:
    blast_radius: tuple[str, ...] = ()
    policies_off: tuple[str, ...] = ()
    """bypass: AuthorizationPolicies that stop being enforced on the bypassed pods."""
    restart_judgement: str | None = None
    undo: str = ""
    undo_risk: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"blast_radius": list(self.blast_radius), "policies_off": list(self.policies_off),
                "restart_judgement": self.restart_judgement, "undo": self.undo, "undo_risk": self.undo_risk}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Review:
        data = data or {}
        return cls(tuple(data.get("blast_radius") or ()), tuple(data.get("policies_off") or ()),
                   data.get("restart_judgement"), data.get("undo") or "", data.get("undo_risk") or "")


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_NAMES])
    return shown + (f" and {len(items) - MAX_NAMES} more" if len(items) > MAX_NAMES else "")


def _selects(deployment: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    wanted = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def _deployments(client: KubeClient, target: ActionTarget, name: str | None) -> list[dict[str, Any]]:
    if target.scope == Scope.MESH:
        return client.list("Deployment")
    found = client.list("Deployment", target.namespace)
    return [d for d in found if _name(d) == name] if name else found


def blast_radius(client: KubeClient, target: ActionTarget, name: str | None,
                 callers: CallerReader | None = None) -> tuple[str, ...]:
    """The workloads and pods the action touches, and who calls them (from Prometheus, when there is one)."""
    deployments = _deployments(client, target, name)
    pods = client.list("Pod", None if target.scope == Scope.MESH else target.namespace)
    if name:
        pods = [p for d in deployments for p in pods if _selects(d, p)]
    where = "the whole mesh" if target.scope == Scope.MESH else f"namespace {target.namespace}"
    lines = [f"Workloads: {len(deployments)} Deployment(s) in {where}"
             + (f" ({_names([_name(d) for d in deployments])})" if deployments else ""),
             f"Pods: {len(pods)} running now" + (f" ({_names([_name(p) for p in pods])})" if pods else "")]
    caller_line = callers_line(target, name, callers)
    return (*lines, caller_line) if caller_line else tuple(lines)


def callers_line(target: ActionTarget, name: str | None, callers: CallerReader | None) -> str | None:
    """Who sends requests to what the action touches: they see its effect (an mTLS mode they must match, pods
    that go away and come back) without being named in it.  None for istiod, whose clients are every proxy."""
    if target.scope == Scope.ISTIOD:
        return None
    if target.scope == Scope.MESH:
        return "Callers: every workload in the mesh (a mesh-wide change reaches every edge)"
    try:
        found = callers(target.namespace, name) if callers else None
    except MeshbotError as exc:  # the card says what it could not read; the plan itself stands
        return f"Callers: not known: Prometheus did not answer ({exc})"
    if found is None:
        return NO_PROMETHEUS
    what = f"{name}.{target.namespace}" if name else f"namespace {target.namespace}"
    window = human_duration(WINDOW)
    if not found:
        return f"Callers: none seen calling {what} in the last {window} (Prometheus, istio_requests_total)"
    named = ", ".join(f"{c} ({round(c.requests):,} requests)" for c in found)
    return f"Callers of {what} in the last {window} (Prometheus, busiest first): {named}"


def policies_switched_off(client: KubeClient, target: ActionTarget, name: str | None) -> tuple[str, ...]:
    """Every AuthorizationPolicy enforced on the workloads a bypass takes out of the mesh.

    Authorization runs in the sidecar: a pod without one enforces no AuthorizationPolicy at all
    (https://istio.io/latest/docs/concepts/security/#authorization-architecture), so a bypass that "fixes" a
    403 does so by switching these off.
    """
    policies = [parse_policy(Resource.from_object(p)) for p in client.list("AuthorizationPolicy", target.namespace)]
    if target.namespace != target.root_namespace:
        policies += [parse_policy(Resource.from_object(p))
                     for p in client.list("AuthorizationPolicy", target.root_namespace)]
    labels = [((d.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
              for d in _deployments(client, target, name)]
    switched: dict[str, str] = {}
    for workload_labels in labels:
        workload = Workload(target.namespace, workload_labels)
        for policy in selecting_policies(policies, workload, target.root_namespace):
            mode = " (dry run)" if policy.dry_run else ""
            switched[f"{policy.namespace}/{policy.name}"] = f"AuthorizationPolicy {policy.namespace}/{policy.name} " \
                                                            f"({policy.action}{mode})"
    return tuple(switched[k] for k in sorted(switched))


def restart_judgement(target: ActionTarget, name: str, findings: Sequence[Finding]) -> str:
    """Whether a restart alone can help, from what the fresh diagnosis says about the Deployment's pods."""
    own = [f for f in findings if f.origin.startswith(f"Pod {target.namespace}/{name}-")]
    oom = next((f for f in own if f.code == OOM_KILLED), None)
    if oom is not None:
        fix = f" `/mesh {oom.remediation.action}`" if oom.remediation and oom.remediation.action else ""
        return ("Won't help alone: it was OOMKilled, and a restart keeps the same memory limit, so it is killed "
                f"again (https://kubernetes.io/docs/tasks/configure-pod-container/assign-memory-resource/). Raise "
                f"the memory instead{fix}; that rolls the pods too.")
    crash = next((f for f in own if f.code == CRASH_LOOP), None)
    if crash is not None:
        return ("Won't help alone: it crash-loops, and a new pod runs the same code and config; read its previous "
                "log for the cause (kubectl logs --previous, https://kubernetes.io/docs/reference/kubectl/generated/"
                "kubectl_logs/).")
    return ("May help: nothing in a fresh diagnosis says its pods fail for a reason a restart keeps (a restart "
            "replaces the pods and keeps the template: https://kubernetes.io/docs/reference/kubectl/generated/"
            "kubectl_rollout/kubectl_rollout_restart/).")


def review(client: KubeClient, target: ActionTarget, name: str | None, findings: Sequence[Finding],
           callers: CallerReader | None = None) -> Review:
    undo, risk = UNDO[target.action]
    return Review(
        blast_radius=blast_radius(client, target, name, callers),
        policies_off=policies_switched_off(client, target, name) if target.action == ActionName.BYPASS else (),
        restart_judgement=restart_judgement(target, name or "istiod", findings)
        if target.action == ActionName.RESTART else None,
        undo=undo, undo_risk=risk)
