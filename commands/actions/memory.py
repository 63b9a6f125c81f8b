"""``memory``: raise a Deployment container's memory limit (and request) in its pod template.  Pure.

The most common blocker of every other remedy is an OOMKilled istiod: config cannot reach a proxy and no new
pod gets a certificate until it serves again, and a restart at the same limit is killed the same way.  This
action is what unblocks it, and it needs only the API server: the Deployment controller rolls the pods
(https://kubernetes.io/docs/concepts/workloads/controllers/deployment/#updating-a-deployment), istiod does not
take part.

The change replaces the template's whole ``containers`` list (a JSON merge patch replaces lists, RFC 7386), with
the list as read as its "before": a container edited by anyone in between is drift and stops the write, and the
rollback restores exactly the old list.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from commands.actions.plan import MUST_NOT_BE_PAUSED, Change, Op, Plan, value_at
from commands.actions.targets import ActionTarget, MemorySetting, Scope
from commands.cluster.quantity import human_bytes, parse_bytes
from commands.errors import UserError

CONTAINERS = ("spec", "template", "spec", "containers")
ISTIOD_CONTAINER = "discovery"
"""istiod's container in Istio's chart (manifests/charts/istio-control/istio-discovery/templates/deployment.yaml)."""
SIDECAR = "istio-proxy"

DEPENDS_ON = ("Depends on: the Kubernetes API server only (the Deployment controller rolls the pods; istiod need not "
              "be healthy) — https://kubernetes.io/docs/concepts/workloads/controllers/deployment/#updating-a-"
              "deployment.")
MAY_STAY_PENDING = ("How this can make things worse: the scheduler places a pod only on a node whose unreserved "
                    "memory covers its request; if none has it, the new pod stays Pending (FailedScheduling) — "
                    "https://kubernetes.io/docs/concepts/configuration/manage-resources-containers/#my-pods-are-"
                    "pending-with-event-message-failedscheduling. The rolling update keeps old pods until new ones "
                    "are Ready (maxUnavailable, https://kubernetes.io/docs/concepts/workloads/controllers/"
                    "deployment/#max-unavailable), but an OOMKilled old pod serves nothing meanwhile.")
REQUEST_FOLLOWS_LIMIT = ("The container has no memory request, so Kubernetes uses the limit as its request "
                         "(https://kubernetes.io/docs/concepts/configuration/manage-resources-containers/#requests-and-"
                         "limits): the new limit is also what the scheduler must find free on a node.")
KEEP_IN_VALUES = ("Put the same value in the Helm values or IstioOperator that installed it (for istiod: "
                  "pilot.resources), or the next upgrade puts the old one back.")


def _container_names(containers: list[dict[str, Any]]) -> list[str]:
    return [str(c.get("name")) for c in containers]


def _choose_container(target: ActionTarget, containers: list[dict[str, Any]]) -> int:
    """The index of the container to change: the one named, istiod's ``discovery``, or the only app container."""
    names = _container_names(containers)
    wanted = target.memory.container if target.memory else None
    if wanted is None and target.scope == Scope.ISTIOD and ISTIOD_CONTAINER in names:
        wanted = ISTIOD_CONTAINER
    if wanted is None:
        apps = [n for n in names if n != SIDECAR] or names
        if len(apps) != 1:
            raise UserError(f"Deployment {target.namespace}/{target.name or 'istiod'} has containers "
                            f"{', '.join(names)}; name one with `--container`")
        wanted = apps[0]
    if wanted not in names:
        raise UserError(f"Deployment {target.namespace}/{target.name or 'istiod'} has no container {wanted} "
                        f"(it has {', '.join(names)})")
    return names.index(wanted)


def _resized(container: Mapping[str, Any], setting: MemorySetting) -> tuple[dict[str, Any], list[str]]:
    """The container with the new memory, and what a reviewer must know about the values."""
    new = copy.deepcopy(dict(container))
    resources = new.setdefault("resources", {})
    old_limit = value_at(container, ("resources", "limits", "memory"))
    old_request = value_at(container, ("resources", "requests", "memory"))
    notes: list[str] = []
    if setting.limit:
        resources.setdefault("limits", {})["memory"] = setting.limit
    if setting.request:
        resources.setdefault("requests", {})["memory"] = setting.request
    request = setting.request or old_request
    limit = setting.limit or old_limit
    if request and limit and (parse_bytes(request) or 0) > (parse_bytes(limit) or 0):
        # The API server refuses a request above the limit (k8s pkg/apis/core/validation ValidateResourceRequirements).
        raise UserError(f"the memory request ({request}) would be above the new limit ({limit}); give `--request` "
                        "too")
    if setting.limit and old_request is None and not setting.request:
        notes.append(REQUEST_FOLLOWS_LIMIT)
    if setting.limit and old_limit and (parse_bytes(setting.limit) or 0) < (parse_bytes(old_limit) or 0):
        notes.append(f"This LOWERS the limit ({old_limit} -> {setting.limit}): a container that was OOMKilled at "
                     f"{old_limit} is killed sooner at {setting.limit}.")
    return new, notes


def _describe(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    parts = []
    for kind in ("limits", "requests"):
        before = value_at(old, ("resources", kind, "memory"))
        after = value_at(new, ("resources", kind, "memory"))
        if before != after:
            was = f"{before} ({human_bytes(parse_bytes(before) or 0)})" if before else "none"
            parts.append(f"memory {kind[:-1]} {was} -> {after}")
    return ", ".join(parts)


def plan_memory(target: ActionTarget, deployment: Mapping[str, Any]) -> Plan:
    """Patch the chosen container's memory in ``deployment``'s pod template (which rolls its pods)."""
    if target.memory is None:
        raise UserError("say the new memory with `--limit` (and/or `--request`)")
    meta = deployment.get("metadata") or {}
    name, namespace = str(meta.get("name")), str(meta.get("namespace") or target.namespace)
    if (deployment.get("spec") or {}).get("paused"):
        raise UserError(f"Deployment {namespace}/{name} is paused, so a new template would not roll its pods; "
                        "`kubectl rollout resume` it first")
    containers = list(value_at(deployment, CONTAINERS) or [])
    if not containers:
        raise UserError(f"Deployment {namespace}/{name} has no containers in its pod template")
    index = _choose_container(target, containers)
    new, value_notes = _resized(containers[index], target.memory)
    change_text = _describe(containers[index], new)
    if not change_text:
        raise UserError(f"{namespace}/{name} container {containers[index]['name']} already has that memory; "
                        "nothing to do")
    after = [*containers[:index], new, *containers[index + 1:]]
    replicas = (deployment.get("spec") or {}).get("replicas", 1)
    return Plan(action=f"memory {name} -n {namespace} {target.memory.flags}",
                summary=f"Set {change_text} of container {new['name']} in Deployment {namespace}/{name} and roll "
                        f"its {replicas} pod(s)",
                changes=(Change(Op.PATCH, "Deployment", namespace, name, before=((CONTAINERS, containers),),
                                after=((CONTAINERS, after),), refuse_if=MUST_NOT_BE_PAUSED),),
                notes=(DEPENDS_ON, MAY_STAY_PENDING, *value_notes, KEEP_IN_VALUES),
                extra={"container": new["name"]})
