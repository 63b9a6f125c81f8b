"""The three emergency remediations of the runbook, each turned into a Plan from the live cluster.

- permissive-mtls: a PeerAuthentication ``meshbot-emergency-permissive`` with
  ``mtls.mode: PERMISSIVE``.  Istio applies only the *oldest* namespace-wide (or
  mesh-wide) PeerAuthentication, so an existing selector-less STRICT policy
  would silently win; the plan patches those to PERMISSIVE too and says so.
- bypass: the pod-template label ``sidecar.istio.io/inject: "false"`` (which
  rolls the Deployment), or for a whole namespace ``istio-injection: disabled``
  plus a rollout restart of its Deployments.
- restart: ``kubectl rollout restart`` — the pod-template annotation
  ``kubectl.kubernetes.io/restartedAt``; a paused Deployment is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from commands.actions.plan import ROLLOUT_TRIGGER, Change, Op, Plan, value_at
from commands.actions.targets import ActionName, ActionTarget, Scope
from commands.errors import NotFound, UserError
from commands.clients.kube import KubeClient

EMERGENCY_POLICY = "meshbot-emergency-permissive"
MANAGED_BY = {"app.kubernetes.io/managed-by": "meshbot"}
MODE = ("spec", "mtls", "mode")
INJECT_LABEL = ("spec", "template", "metadata", "labels", "sidecar.istio.io/inject")
MUST_NOT_BE_PAUSED = ((("spec", "paused"),
                       "is paused now, so its pods would not roll; `kubectl rollout resume` it and ask again"),)
NAMESPACE_INJECTION = ("metadata", "labels", "istio-injection")
RESTARTED_AT = ROLLOUT_TRIGGER


def plan_action(client: KubeClient, target: ActionTarget, now: datetime | None = None) -> Plan:
    now = now or datetime.now(timezone.utc)
    if target.action == ActionName.PERMISSIVE_MTLS:
        return plan_permissive_mtls(client, target)
    if target.action == ActionName.BYPASS:
        return plan_bypass(client, target, now)
    return plan_restart(client, target, now)


def _name(obj: Mapping[str, Any]) -> str:
    return (obj.get("metadata") or {}).get("name", "")


def _require_namespace(client: KubeClient, namespace: str) -> dict[str, Any]:
    try:
        return client.get("Namespace", None, namespace)
    except NotFound:
        raise UserError(f"namespace {namespace} does not exist") from None


def _deployment(client: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    try:
        return client.get("Deployment", namespace, name)
    except NotFound:
        raise UserError(f"there is no Deployment {name} in namespace {namespace}") from None


def restart_stamp(now: datetime) -> str:
    """What ``kubectl rollout restart`` writes: RFC 3339, seconds."""
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- permissive mTLS ------------------------------------------------------------------------


def plan_permissive_mtls(client: KubeClient, target: ActionTarget) -> Plan:
    namespace = target.namespace
    _require_namespace(client, namespace)
    policies = client.list("PeerAuthentication", namespace)
    ours = next((p for p in policies if _name(p) == EMERGENCY_POLICY), None)
    changes: list[Change] = []
    notes: list[str] = []
    if ours is None:
        changes.append(Change(Op.CREATE, "PeerAuthentication", namespace, EMERGENCY_POLICY, body={
            "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": EMERGENCY_POLICY, "namespace": namespace, "labels": dict(MANAGED_BY)},
            "spec": {"mtls": {"mode": "PERMISSIVE"}}}))
    elif value_at(ours, MODE) != "PERMISSIVE":
        changes.append(Change(Op.PATCH, "PeerAuthentication", namespace, EMERGENCY_POLICY,
                              before=((MODE, value_at(ours, MODE)),), after=((MODE, "PERMISSIVE"),)))
    wide = "mesh-wide" if target.scope == Scope.MESH else "namespace-wide"
    for policy in policies:
        name = _name(policy)
        if name == EMERGENCY_POLICY:
            continue
        spec = policy.get("spec") or {}
        mode = value_at(policy, MODE)
        if not spec.get("selector") and mode == "STRICT":
            changes.append(Change(Op.PATCH, "PeerAuthentication", namespace, name,
                                  before=((MODE, "STRICT"),), after=((MODE, "PERMISSIVE"),)))
            notes.append(f"PeerAuthentication {namespace}/{name} is {wide} STRICT; Istio applies only the oldest "
                         f"{wide} policy, so it is switched to PERMISSIVE too (the rollback restores STRICT).")
        elif not spec.get("selector") and mode in (None, "UNSET") and target.scope == Scope.NAMESPACE:
            # It inherits the mesh-wide mode (STRICT, maybe) and, if older than ours, it is the one Istio applies.
            changes.append(Change(Op.PATCH, "PeerAuthentication", namespace, name,
                                  before=((MODE, mode),), after=((MODE, "PERMISSIVE"),)))
            notes.append(f"PeerAuthentication {namespace}/{name} is namespace-wide and inherits the mesh-wide mode; "
                         "Istio applies only the oldest namespace-wide policy, so it is set to PERMISSIVE too (the "
                         f"rollback restores {mode or 'no mode'}).")
        elif spec.get("selector") and _strict_anywhere(spec):
            notes.append(f"PeerAuthentication {namespace}/{name} selects workloads and stays STRICT for them "
                         "(workload policies override this one).")
    if target.scope == Scope.MESH:
        for policy in client.list("PeerAuthentication"):
            meta = policy.get("metadata") or {}
            if meta.get("namespace") != namespace and _strict_anywhere(policy.get("spec") or {}):
                notes.append(f"PeerAuthentication {meta.get('namespace')}/{meta.get('name')} stays STRICT and "
                             "overrides the mesh-wide policy there.")
    if not changes:
        raise UserError(f"mTLS is already PERMISSIVE through {EMERGENCY_POLICY} in {namespace}; nothing to do")
    where = "the whole mesh" if target.scope == Scope.MESH else f"namespace {namespace}"
    return Plan(action=target.command, summary=f"Accept plain-text traffic (mTLS PERMISSIVE) in {where}",
                changes=tuple(changes), notes=tuple(notes))


def _strict_anywhere(spec: Mapping[str, Any]) -> bool:
    if (spec.get("mtls") or {}).get("mode") == "STRICT":
        return True
    return any((port or {}).get("mode") == "STRICT" for port in (spec.get("portLevelMtls") or {}).values())


# -- bypass ---------------------------------------------------------------------------------------


def plan_bypass(client: KubeClient, target: ActionTarget, now: datetime) -> Plan:
    if target.scope == Scope.NAMESPACE:
        return _plan_bypass_namespace(client, target, now)
    assert target.name is not None
    deployment = _deployment(client, target.namespace, target.name)
    if (deployment.get("spec") or {}).get("paused"):
        raise UserError(f"Deployment {target.namespace}/{target.name} is paused, so changing its pods would not "
                        "roll them; resume it first (`kubectl rollout resume`)")
    current = value_at(deployment, INJECT_LABEL)
    if current == "false":
        raise UserError(f"Deployment {target.namespace}/{target.name} is already out of the mesh "
                        "(sidecar.istio.io/inject=false)")
    notes = []
    if value_at(deployment, ("spec", "template", "metadata", "annotations", "sidecar.istio.io/inject")):
        notes.append("The pod template also has the legacy sidecar.istio.io/inject annotation; the label wins.")
    return Plan(action=target.command,
                summary=f"Take Deployment {target.namespace}/{target.name} out of the mesh (no sidecar) and roll it",
                changes=(Change(Op.PATCH, "Deployment", target.namespace, target.name,
                                before=((INJECT_LABEL, current),), after=((INJECT_LABEL, "false"),),
                                refuse_if=MUST_NOT_BE_PAUSED),),
                notes=tuple(notes))


def _plan_bypass_namespace(client: KubeClient, target: ActionTarget, now: datetime) -> Plan:
    namespace = _require_namespace(client, target.namespace)
    current = value_at(namespace, NAMESPACE_INJECTION)
    if current == "disabled":
        raise UserError(f"namespace {target.namespace} already has istio-injection=disabled")
    changes = [Change(Op.PATCH, "Namespace", None, target.namespace,
                      before=((NAMESPACE_INJECTION, current),), after=((NAMESPACE_INJECTION, "disabled"),))]
    notes = []
    stamp = restart_stamp(now)
    for deployment in sorted(client.list("Deployment", target.namespace), key=_name):
        if (deployment.get("spec") or {}).get("paused"):
            notes.append(f"Deployment {target.namespace}/{_name(deployment)} is paused and is not restarted; "
                         "its pods keep their sidecars until it is resumed.")
            continue
        changes.append(Change(Op.PATCH, "Deployment", target.namespace, _name(deployment),
                              before=((RESTARTED_AT, value_at(deployment, RESTARTED_AT)),),
                              after=((RESTARTED_AT, stamp),), refuse_if=MUST_NOT_BE_PAUSED))
    notes.append("Pods not owned by a Deployment (StatefulSets, Jobs, bare pods) keep their sidecars until "
                 "they are recreated.")
    return Plan(action=target.command,
                summary=f"Take namespace {target.namespace} out of the mesh and restart its "
                        f"{len(changes) - 1} Deployment(s) without sidecars",
                changes=tuple(changes), notes=tuple(notes))


# -- restart ----------------------------------------------------------------------------------------


def _istiod_name(client: KubeClient, namespace: str) -> str:
    try:
        client.get("Deployment", namespace, "istiod")
        return "istiod"
    except NotFound:
        pass
    candidates = sorted(_name(d) for d in client.list("Deployment", namespace, label_selector="app=istiod"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise UserError(f"there is no istiod Deployment in namespace {namespace}")
    raise UserError(f"namespace {namespace} has several istiod revisions ({', '.join(candidates)}); "
                    f"name one: `restart {candidates[0]} -n {namespace}`")


def plan_restart(client: KubeClient, target: ActionTarget, now: datetime) -> Plan:
    name = target.name or _istiod_name(client, target.namespace)
    deployment = _deployment(client, target.namespace, name)
    if (deployment.get("spec") or {}).get("paused"):
        raise UserError(f"Deployment {target.namespace}/{name} is paused; `kubectl rollout resume` it first "
                        "(a restart of a paused Deployment does nothing)")
    replicas = (deployment.get("spec") or {}).get("replicas", 1)
    return Plan(action=f"restart {name} -n {target.namespace}",
                summary=f"Rollout restart of Deployment {target.namespace}/{name} ({replicas} replica(s))",
                changes=(Change(Op.PATCH, "Deployment", target.namespace, name,
                                before=((RESTARTED_AT, value_at(deployment, RESTARTED_AT)),),
                                after=((RESTARTED_AT, restart_stamp(now)),), refuse_if=MUST_NOT_BE_PAUSED),),
                reversible=False)
