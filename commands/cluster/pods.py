"""Facts about pods that several checks need: roles, the sidecar container, its trouble."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from commands.cluster.snapshot import Resource

SIDECAR_CONTAINER = "istio-proxy"
ISTIOD_CONTAINER = "discovery"


def is_istiod(pod: Resource) -> bool:
    labels = pod.labels
    return labels.get("app") == "istiod" or labels.get("istio") == "pilot"


def is_gateway(pod: Resource) -> bool:
    labels = pod.labels
    return (labels.get("istio") in {"ingressgateway", "egressgateway"}
            or "gateway.networking.k8s.io/gateway-name" in labels
            or "istio.io/gateway-name" in labels
            or (pod.annotations.get("inject.istio.io/templates") == "gateway"))


def control_plane_role(pod: Resource) -> str | None:
    if is_istiod(pod):
        return "istiod"
    if is_gateway(pod):
        return "gateway"
    return None


def sidecar_spec(pod: Resource) -> Mapping[str, Any] | None:
    """The istio-proxy container spec: a regular container or a native (init) sidecar."""
    spec = pod.spec
    for section in ("containers", "initContainers"):
        for container in spec.get(section) or []:
            if container.get("name") == SIDECAR_CONTAINER:
                return container
    return None


def has_sidecar(pod: Resource) -> bool:
    return sidecar_spec(pod) is not None and not is_gateway(pod)


@dataclass(frozen=True)
class ContainerHealth:
    """What a container status says, in the terms the checks use."""

    name: str
    ready: bool
    restarts: int
    waiting_reason: str | None
    last_terminated_reason: str | None
    terminated_reason: str | None

    @property
    def crash_looping(self) -> bool:
        return self.waiting_reason == "CrashLoopBackOff"

    @property
    def oom_killed(self) -> bool:
        return "OOMKilled" in (self.last_terminated_reason, self.terminated_reason)


def container_health(pod: Resource) -> Iterator[ContainerHealth]:
    status = pod.status
    for section in ("containerStatuses", "initContainerStatuses"):
        for cs in status.get(section) or []:
            state = cs.get("state") or {}
            last = cs.get("lastState") or {}
            yield ContainerHealth(
                name=cs.get("name", ""),
                ready=bool(cs.get("ready")),
                restarts=int(cs.get("restartCount") or 0),
                waiting_reason=(state.get("waiting") or {}).get("reason"),
                last_terminated_reason=(last.get("terminated") or {}).get("reason"),
                terminated_reason=(state.get("terminated") or {}).get("reason"),
            )


def sidecar_health(pod: Resource) -> ContainerHealth | None:
    for health in container_health(pod):
        if health.name == SIDECAR_CONTAINER:
            return health
    return None


def sidecar_trouble_score(pod: Resource) -> int:
    """Higher for sidecars that look worse: used to pick which Envoys to inspect first."""
    health = sidecar_health(pod)
    if health is None:
        return 0
    score = min(health.restarts, 50)
    score += 100 if health.crash_looping else 0
    score += 50 if health.oom_killed else 0
    score += 25 if not health.ready else 0
    return score


def owner_deployment(pod: Resource) -> str | None:
    """The Deployment behind a pod, from its ReplicaSet owner (``api-6b7c9d8f5`` -> ``api``)."""
    for owner in pod.metadata.get("ownerReferences") or []:
        if owner.get("kind") == "ReplicaSet" and "-" in owner.get("name", ""):
            return owner["name"].rsplit("-", 1)[0]
    return None


def container_spec(pod: Resource, name: str) -> Mapping[str, Any] | None:
    for section in ("containers", "initContainers"):
        for container in pod.spec.get(section) or []:
            if container.get("name") == name:
                return container
    return None


def image_tag(image: str | None) -> str | None:
    """``docker.io/istio/pilot:1.22.1`` -> ``1.22.1`` (digests and registries with ports handled)."""
    if not image:
        return None
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def terminating(pod: Resource) -> bool:
    """The pod is being deleted (``metadata.deletionTimestamp`` set): Kubernetes has taken it out of its
    Services' endpoints and it is draining (https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/
    #pod-termination)."""
    return bool(pod.metadata.get("deletionTimestamp"))


def not_ready(pod: Resource) -> bool:
    """The pod's ``Ready`` condition says False; a pod whose status carries no conditions (a capture) is not
    judged."""
    for condition in pod.status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") != "True"
    return False
