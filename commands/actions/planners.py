"""The three emergency remediations of the runbook, each turned into a Plan from the live cluster.

- permissive-mtls: a PeerAuthentication ``meshbot-emergency-permissive`` with
  ``mtls.mode: PERMISSIVE``.  Istio applies only the *oldest* namespace-wide (or
  mesh-wide) PeerAuthentication, so an existing selector-less STRICT policy
  would silently win; the plan patches those to PERMISSIVE too and says so.
  When the scope has workloads with sidecars (or ``--plaintext-clients``), also a
  DestinationRule ``meshbot-emergency-plaintext`` with ``tls.mode: DISABLE``, and a
  patch of every existing DestinationRule that would keep clients on mTLS
  (``commands.actions.destination_rules``).
- bypass: the pod-template label ``sidecar.istio.io/inject: "false"`` (which
  rolls the Deployment), or for a whole namespace ``istio-injection: disabled``
  plus a rollout restart of its Deployments.
- restart: ``kubectl rollout restart`` — the pod-template annotation
  ``kubectl.kubernetes.io/restartedAt``; a paused Deployment is refused.
- memory: a container's memory limit/request in the pod template (``commands.actions.memory``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from commands.actions.destination_rules import (
    DISABLE,
    MESH_HOSTS,
    PLAINTEXT_RULE,
    TLS_MODE,
    namespace_hosts,
    plaintext_patch,
    plaintext_rule,
    rules_keeping_mtls,
)
from commands.actions.memory import plan_memory
from commands.actions.plan import MUST_NOT_BE_PAUSED, ROLLOUT_TRIGGER, Change, Op, Plan, value_at
from commands.actions.targets import ActionName, ActionTarget, ClientMode, Scope
from commands.clients.kube import KubeClient
from commands.cluster.injection import DATAPLANE_MODE_LABEL, INJECTION_LABEL, REVISION_LABEL, NamespaceInjection
from commands.errors import MeshbotError, NotFound, UserError
from commands.suggestions import did_you_mean
from commands.times import rfc3339

EMERGENCY_POLICY = "meshbot-emergency-permissive"
MANAGED_BY = {"app.kubernetes.io/managed-by": "meshbot"}
MODE = ("spec", "mtls", "mode")
INJECT_LABEL = ("spec", "template", "metadata", "labels", "sidecar.istio.io/inject")
NAMESPACE_INJECTION = ("metadata", "labels", INJECTION_LABEL)
# ``kubectl rollout restart`` writes this annotation as RFC 3339 to the second (commands.times.rfc3339).
RESTARTED_AT = ROLLOUT_TRIGGER


def plan_action(client: KubeClient, target: ActionTarget, now: datetime | None = None) -> Plan:
    now = now or datetime.now(timezone.utc)
    if target.action == ActionName.PERMISSIVE_MTLS:
        return plan_permissive_mtls(client, target)
    if target.action == ActionName.BYPASS:
        return plan_bypass(client, target, now)
    if target.action == ActionName.MEMORY:
        name = target.name or _istiod_name(client, target.namespace)
        return plan_memory(target, _deployment(client, target.namespace, name))
    return plan_restart(client, target, now)


def _name(obj: Mapping[str, Any]) -> str:
    return (obj.get("metadata") or {}).get("name", "")


def _require_namespace(client: KubeClient, namespace: str) -> dict[str, Any]:
    try:
        return client.get("Namespace", None, namespace)
    except NotFound:
        raise UserError(f"namespace {namespace} does not exist, so nothing was planned."
                        f"{did_you_mean(namespace, _names(client, 'Namespace', None))}") from None


def _deployment(client: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    try:
        return client.get("Deployment", namespace, name)
    except NotFound:
        raise UserError(_no_deployment(client, namespace, name)) from None


def _no_deployment(client: KubeClient, namespace: str, name: str) -> str:
    """Why ``namespace/name`` cannot be planned, with the closest names that exist (issue 27: never a silent
    nothing for a typo): the namespace itself when it is the one that does not exist, else its Deployments."""
    existing = _names(client, "Deployment", namespace)
    try:
        if not existing:  # a namespace with Deployments exists; an empty one may be the typo
            client.get("Namespace", None, namespace)
    except NotFound:
        return (f"namespace {namespace} does not exist, so there is no Deployment {name} in it and nothing was "
                f"planned.{did_you_mean(namespace, _names(client, 'Namespace', None))}")
    except MeshbotError:
        pass  # cannot tell (no right to read namespaces): the Deployment's own absence is what is known
    hint = did_you_mean(name, existing) or (
        f" Its Deployments: {', '.join(f'`{d}`' for d in existing[:10])}." if existing else "")
    return f"there is no Deployment {name} in namespace {namespace}, so nothing was planned.{hint}"


def _names(client: KubeClient, kind: str, namespace: str | None) -> list[str]:
    """The names of ``kind`` objects (in ``namespace``), for suggestions; none when they cannot be listed."""
    try:
        return sorted(_name(o) for o in client.list(kind, namespace))
    except MeshbotError:
        return []


# -- permissive mTLS ------------------------------------------------------------------------


def plan_permissive_mtls(client: KubeClient, target: ActionTarget) -> Plan:
    """Servers accept plaintext (PeerAuthentication) and, when needed, clients send it (DestinationRule).

    Both halves are needed between meshed workloads: PERMISSIVE only lets servers accept
    plaintext, while auto mTLS keeps client sidecars originating mTLS to every workload with a
    sidecar, which is what fails when the certificates are broken
    (https://istio.io/latest/docs/tasks/security/authentication/authn-policy/#auto-mutual-tls).
    Changes are ordered servers first, so neither applying nor rolling back (newest first) ever
    sends plaintext to a server that still demands mTLS.
    """
    namespace = target.namespace
    labels = (_require_namespace(client, namespace).get("metadata") or {}).get("labels") or {}
    changes, notes = _permissive_servers(client, target)
    meshed = _meshed_workloads(client, target, labels) if target.clients == ClientMode.AUTO else None
    send_plaintext = target.clients == ClientMode.PLAINTEXT or bool(meshed)
    if send_plaintext:
        client_changes, client_notes = _plaintext_clients(client, target)
        changes += client_changes
        notes = [BOTH_HALVES, MAKES_WORSE, *client_notes, *notes, *_identity_policies(client, target)]
    elif target.clients == ClientMode.AUTO:
        notes.append(f"No workload in {_where(target)} has a sidecar (no pod labelled "
                     f"{TLS_MODE_LABEL}=istio, no injection label), so clients already send it plaintext and no "
                     "DestinationRule is added; `--plaintext-clients` adds one anyway.")
    if not changes:
        raise UserError(f"mTLS is already PERMISSIVE through {EMERGENCY_POLICY} in {namespace}"
                        + (f" and clients already send plaintext through {PLAINTEXT_RULE}" if send_plaintext else "")
                        + "; nothing to do")
    summary = (f"Accept and send plaintext (mTLS PERMISSIVE + DestinationRule tls DISABLE) in {_where(target)}"
               if send_plaintext else f"Accept plain-text traffic (mTLS PERMISSIVE) in {_where(target)}")
    return Plan(action=target.command, summary=summary, changes=tuple(changes), notes=tuple(notes))


BOTH_HALVES = ("Both halves are needed: PERMISSIVE only lets servers accept plaintext, while auto mTLS keeps client "
               "sidecars originating mTLS, with the broken certificates, to every workload with a sidecar until a "
               "DestinationRule says tls DISABLE (istio.io authn-policy, auto mutual TLS).")
MAKES_WORSE = ("How this can make things worse: while it is in place, traffic between these workloads is unencrypted "
               "and unauthenticated, and AuthorizationPolicy rules on mTLS identities (principals, namespaces) never "
               "match plaintext, so ALLOW rules naming them deny these calls "
               "(https://istio.io/latest/news/security/istio-security-2021-004/).")
TLS_MODE_LABEL = "security.istio.io/tlsMode"
"""The label injected pods carry; istiod gives an endpoint auto mTLS when it reads ``istio``
(``GetTLSModeFromEndpointLabels`` in istio/istio pilot/pkg/model/service.go)."""
# Label selectors that narrow the Namespace list to candidates; NamespaceInjection decides (istio-injection=disabled
# next to istio.io/rev is listed by the second selector and is not enrolled).
ENROLMENT_CANDIDATES = (f"{INJECTION_LABEL}=enabled", REVISION_LABEL, f"{DATAPLANE_MODE_LABEL}=ambient")


def _where(target: ActionTarget) -> str:
    return "the whole mesh" if target.scope == Scope.MESH else f"namespace {target.namespace}"


def _permissive_servers(client: KubeClient, target: ActionTarget) -> tuple[list[Change], list[str]]:
    namespace = target.namespace
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
    return changes, notes


def _meshed_workloads(client: KubeClient, target: ActionTarget, labels: Mapping[str, str]) -> bool:
    """Whether the scope has servers that auto mTLS sends mTLS to: injected pods or a namespace the mesh enrols
    (commands.cluster.injection: the rule the analyzers use too).

    ``labels`` are the acted-in namespace's; the injection label counts even while no pod runs
    (they may all be crash-looping on the broken certificates).
    """
    scope = None if target.scope == Scope.MESH else target.namespace
    if client.list("Pod", scope, label_selector=f"{TLS_MODE_LABEL}=istio"):
        return True
    if scope is None:
        return any(NamespaceInjection.of_labels((ns.get("metadata") or {}).get("labels") or {}).enrolled
                   for selector in ENROLMENT_CANDIDATES for ns in client.list("Namespace", label_selector=selector))
    return NamespaceInjection.of_labels(labels).enrolled


def _plaintext_clients(client: KubeClient, target: ActionTarget) -> tuple[list[Change], list[str]]:
    """meshbot's DestinationRule, plus a patch of every existing rule that would keep clients on mTLS."""
    home = target.namespace
    mesh = target.scope == Scope.MESH
    area = MESH_HOSTS if mesh else namespace_hosts(home)
    rules = client.list("DestinationRule")
    ours = next((r for r in rules if _name(r) == PLAINTEXT_RULE
                 and (r.get("metadata") or {}).get("namespace") == home), None)
    changes: list[Change] = []
    if ours is None:
        changes.append(Change(Op.CREATE, "DestinationRule", home, PLAINTEXT_RULE, body=plaintext_rule(home, area)))
    elif value_at(ours, TLS_MODE) != DISABLE:
        changes.append(Change(Op.PATCH, "DestinationRule", home, PLAINTEXT_RULE,
                              before=((TLS_MODE, value_at(ours, TLS_MODE)),), after=((TLS_MODE, DISABLE),)))
    keeping = rules_keeping_mtls(rules, area, home, target.root_namespace)
    changes += [plaintext_patch(k.rule) for k in keeping if k.patchable]
    # Rules the plan leaves alone first: they are where traffic keeps failing, and a reviewer must see them.
    return changes, [k.note(area) for k in sorted(keeping, key=lambda k: k.patchable)]


def _identity_policies(client: KubeClient, target: ActionTarget) -> list[str]:
    """AuthorizationPolicies in scope whose rules use the mTLS-only fields (ISTIO-SECURITY-2021-004)."""
    scope = None if target.scope == Scope.MESH else target.namespace
    policies = client.list("AuthorizationPolicy", scope)
    if scope is not None and scope != target.root_namespace:
        # Policies in the root namespace apply to every workload in the mesh.
        policies += client.list("AuthorizationPolicy", target.root_namespace)
    notes = []
    for policy in sorted(policies, key=lambda p: ((p.get("metadata") or {}).get("namespace", ""), _name(p))):
        fields = identity_fields(policy.get("spec") or {})
        if fields:
            meta = policy.get("metadata") or {}
            action = (policy.get("spec") or {}).get("action", "ALLOW")
            notes.append(f"AuthorizationPolicy {meta.get('namespace')}/{meta.get('name')} ({action}) matches on "
                         f"{', '.join(fields)}, which plaintext never carries: its rules stop matching these calls.")
    if len(notes) > MAX_POLICY_NOTES:
        notes[MAX_POLICY_NOTES - 1:] = [f"{len(notes) - MAX_POLICY_NOTES + 1} more AuthorizationPolicies match on "
                                        "mTLS identities and stop matching these calls."]
    return notes


MAX_POLICY_NOTES = 4


_IDENTITY_SOURCES = ("principals", "notPrincipals", "namespaces", "notNamespaces")
_IDENTITY_CONDITIONS = ("source.principal", "source.namespace")


def identity_fields(spec: Mapping[str, Any]) -> list[str]:
    """The mTLS-only fields an AuthorizationPolicy uses (https://istio.io/latest/news/security/istio-security-2021-004/)."""
    used: list[str] = []
    for rule in spec.get("rules") or ():
        for source in rule.get("from") or ():
            used += [f for f in _IDENTITY_SOURCES if (source.get("source") or {}).get(f)]
        used += [c.get("key") for c in rule.get("when") or () if c.get("key") in _IDENTITY_CONDITIONS]
    return sorted(set(used))


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
    stamp = rfc3339(now)
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
                                after=((RESTARTED_AT, rfc3339(now)),), refuse_if=MUST_NOT_BE_PAUSED),),
                reversible=False)
